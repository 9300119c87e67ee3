// A layer's head groups as the engine builds them (DeviceModel, Session, the memory plans): one
// group per KV method, in registry order, with the query heads it serves and its cache shape.
//
// DHA layers (src/dha/config.ts) with decoupled heads, that is any layout but the plain multi-head
// one (key head h = value head h = query head h), have patterns over their query heads (the nominal
// multi-head shape: one column per query head). There (docs/dha.md, "DuoAttention on DHA models"):
//  - a key head streams iff every query head that reads it is marked streaming; a query head streams
//    iff its key head does, so a marked-streaming query head whose key head a retrieval query head
//    also reads attends in full (it is promoted, and counts as retrieval);
//  - a value head is kept full iff some full query head reads it; every value head a streaming query
//    head reads also gets a ring in the streaming group (a value head read by both kinds has both:
//    exact, since a streaming query only reads the sink and recent positions).
// So the layer becomes up to two groups, full then streaming, each with exactly its own key, value
// and query heads and maps re-indexed into them. Methods other than full and streaming (those
// without decoupledHeads) are refused there, naming the layer and the head.
import type { HeadMaps } from '../backend/contract.js';
import type { DhaLayer } from '../dha/config.js';
import type { KvGroupShape, KvMethod } from '../kv/method.js';
import { fullMethod } from '../kv/full/method.js';
import { streamingMethod } from '../kv/streaming/method.js';
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
  /**
   * Decoupled heads: the layer's query, key and value heads the group serves, ascending (its maps
   * index into these lists); its weights are those rows of Q, K, V and those columns of O.
   */
  heads?: DecoupledHeads;
}

export interface DecoupledHeads { query: number[]; key: number[]; value: number[] }

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

/**
 * A decoupled layer's query heads by what they do under a pattern's methods (one per query head):
 * streaming, or full; `promoted` are those marked streaming that attend in full because a full query
 * head reads their key head.
 */
export function decoupledKinds(d: DhaLayer, row: readonly string[]): { streams: boolean[]; promoted: number[] } {
  const marked = row.map((name) => name === streamingMethod.name);
  const keyStreams = Array.from({ length: d.keyHeads }, (_, k) => d.queryToKey.every((kh, h) => kh !== k || marked[h]));
  const streams = d.queryToKey.map((kh) => keyStreams[kh]);
  return { streams, promoted: marked.flatMap((m, h) => (m && !streams[h] ? [h] : [])) };
}

/** Per layer, the query heads a pattern marks streaming that attend in full (decoupled layers only; see decoupledKinds). */
export function promotedHeads(config: ModelConfig, methods: HeadMethods): number[][] {
  return methods.map((row, l) => (decoupledMaps(config, l) ? decoupledKinds(config.dha!.layers[l], row).promoted : []));
}

/** promotedHeads in words for a head description ('' when none). */
export function describePromoted(config: ModelConfig, methods: HeadMethods): string {
  const p = promotedHeads(config, methods);
  const n = p.reduce((a, x) => a + x.length, 0);
  if (n === 0) return '';
  const where = p.flatMap((hs, l) => (hs.length ? [`layer ${l}: ${hs.join(',')}`] : [])).join('; ');
  return `; ${n} marked-streaming query head${n > 1 ? 's' : ''} of decoupled (DHA) layers attend${n > 1 ? '' : 's'} in full, sharing a key head with a retrieval head (${where})`;
}

function decoupledGroups(config: ModelConfig, l: number, row: readonly string[], maps: HeadMaps): LayerGroup[] {
  const d = config.dha!.layers[l];
  row.forEach((name, h) => {
    const m = kvMethod(name);
    // The split below knows these two, the methods that serve decoupled heads.
    if (!m.decoupledHeads || (m !== fullMethod && m !== streamingMethod)) {
      throw new Error(`head methods: layer ${l} has decoupled key/value heads (duet_dha: ${d.keyHeads} key heads, ${d.valueHeads} value heads), where heads are full or streaming; head ${h} is given "${name}" (see docs/dha.md)`);
    }
  });
  const { streams } = decoupledKinds(d, row);
  // Every head full: the layer's own maps (one object per layout, which backends may keep a device copy of).
  if (streams.every((s) => !s)) {
    return [{ method: fullMethod, kvHeads: row.map((_, h) => h), numHeads: config.numHeads, shape: { numKvHeads: d.keyHeads, group: 1, headDim: config.headDim, layer: l, maps },
      heads: { query: row.map((_, h) => h), key: [...Array(d.keyHeads).keys()], value: [...Array(d.valueHeads).keys()] } }];
  }
  const out: LayerGroup[] = [];
  for (const [method, streaming] of [[fullMethod, false], [streamingMethod, true]] as const) {
    const query = streams.flatMap((s, h) => (s === streaming ? [h] : []));
    if (query.length === 0) continue;
    const key = [...new Set(query.map((h) => d.queryToKey[h]))].sort((a, b) => a - b);
    const value = [...new Set(query.map((h) => d.queryToValue[h]))].sort((a, b) => a - b);
    out.push({
      method, kvHeads: query, numHeads: query.length, heads: { query, key, value },
      shape: { numKvHeads: key.length, group: 1, headDim: config.headDim, layer: l, maps: groupMaps(d, streaming, query, key, value) },
    });
  }
  return out;
}

const groupMapsOf = new WeakMap<DhaLayer, Map<string, HeadMaps>>();

/** A group's maps into its own head lists, one object per (layout, group) like decoupledMaps. */
function groupMaps(d: DhaLayer, streaming: boolean, query: number[], key: number[], value: number[]): HeadMaps {
  let byGroup = groupMapsOf.get(d);
  if (!byGroup) { byGroup = new Map(); groupMapsOf.set(d, byGroup); }
  const id = `${streaming}:${query.join(',')}`;
  let maps = byGroup.get(id);
  if (!maps) {
    maps = {
      numValueHeads: value.length,
      queryToKey: Int32Array.from(query, (h) => key.indexOf(d.queryToKey[h])),
      queryToValue: Int32Array.from(query, (h) => value.indexOf(d.queryToValue[h])),
    };
    byGroup.set(id, maps);
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
    return decoupledGroups(config, l, row, maps);
  });
}
