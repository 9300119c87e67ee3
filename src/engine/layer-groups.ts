// A layer's head groups as the engine builds them (DeviceModel, Session, the memory plans): one
// group per KV method, in registry order, with the query heads it serves and its cache shape.
//
// DHA layers (src/dha/config.ts) with decoupled heads, that is any layout but the plain multi-head
// one (key head h = value head h = query head h), form one group of all their heads, whose cache
// holds exactly the layer's key heads and value heads and whose attention reads them through the
// query→key and query→value maps. DuoAttention's methods are chosen per KV head, and a KV head is a
// key head and a value head read by the same query heads; a decoupled layer has no such pairs, so
// all its heads must share one method that serves decoupled heads (full attention); a pattern that
// asks otherwise is refused, naming the layer and the head.
import type { HeadMaps } from '../backend/contract.js';
import type { DhaLayer } from '../dha/config.js';
import type { KvGroupShape, KvMethod } from '../kv/method.js';
import { groupHeads, kvMethod, type HeadMethods } from '../kv/registry.js';
import type { ModelConfig } from '../model/config.js';

export interface LayerGroup {
  method: KvMethod;
  /** The KV heads of the pattern (columns of its methods row) the group serves. */
  kvHeads: number[];
  /** Query heads the group serves. */
  numHeads: number;
  /** Its cache's shape (numKvHeads: key heads; maps for decoupled heads). */
  shape: KvGroupShape;
}

const mapsOf = new WeakMap<DhaLayer, HeadMaps>();

/**
 * The head maps of layer l when its key and value heads are decoupled, else null (no DHA layout,
 * or a DHA layer that kept every head: plain multi-head). One object per layer layout, so that
 * backends may keep a device copy of it.
 */
export function decoupledMaps(config: ModelConfig, l: number): HeadMaps | null {
  const d = config.dha?.layers[l];
  if (!d) return null;
  const H = config.numHeads;
  const plain = d.keyHeads === H && d.valueHeads === H && d.queryToKey.every((k, h) => k === h) && d.queryToValue.every((v, h) => v === h);
  if (plain) return null;
  let maps = mapsOf.get(d);
  if (!maps) {
    maps = { numValueHeads: d.valueHeads, queryToKey: Int32Array.from(d.queryToKey), queryToValue: Int32Array.from(d.queryToValue) };
    mapsOf.set(d, maps);
  }
  return maps;
}

/** Each layer's head groups for the methods of each (layer, KV head). */
export function layerGroups(config: ModelConfig, methods: HeadMethods): LayerGroup[][] {
  const { numHeads: H, numKvHeads: NKV, headDim } = config;
  return methods.map((row, l) => {
    const maps = decoupledMaps(config, l);
    if (!maps) {
      const group = H / NKV;
      return groupHeads(row).map((g) => ({
        method: g.method, kvHeads: g.kvHeads, numHeads: g.kvHeads.length * group,
        shape: { numKvHeads: g.kvHeads.length, group, headDim, layer: l, kvHeads: g.kvHeads },
      }));
    }
    const method = kvMethod(row[0]);
    const d = config.dha!.layers[l];
    row.forEach((name, h) => {
      if (name !== method.name || !method.decoupledHeads) {
        throw new Error(`head methods: layer ${l} has decoupled key/value heads (duet_dha: ${d.keyHeads} key heads, ${d.valueHeads} value heads), so all its heads must use full attention; KV head ${h} is given "${name}" (see docs/dha.md)`);
      }
    });
    return [{ method, kvHeads: row.map((_, h) => h), numHeads: H, shape: { numKvHeads: d.keyHeads, group: 1, headDim, layer: l, maps } }];
  });
}
