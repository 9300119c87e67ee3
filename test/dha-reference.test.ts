// A collapsed DHA model against the float64 reference: the tied multi-head TrainModel the
// continued training runs (K/V rows shared by the query heads of a group) computes the same logits
// as a plain forward of the DHA checkpoint's tensors (k_proj key_heads·head_dim rows, v_proj
// value_heads·head_dim rows) through its query→key and query→value maps.
// Tolerance: |f32 − f64| ≤ 1e-4·(1 + |reference|) per logit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { allocateHeads, groupsLayout, type HeadGroups } from '../src/dha/allocate.ts';
import { HeadFusion } from '../src/dha/fusion.ts';
import { meanPoolGroups } from '../src/dha/meanpool.ts';
import { measureHeads } from '../src/dha/similarity.ts';
import { parseModelConfig } from '../src/model/config.ts';
import type { LayerWeights, ModelWeights } from '../src/model/weights.ts';
import { hfConfig } from '../src/node/checkpoint-io.ts';
import { Arena } from '../src/train/arena.ts';
import { cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { Random } from '../src/tasks/random.ts';
import type { DhaConfig } from '../src/dha/config.ts';
import { referenceLogits } from './reference/model.ts';

const rnd = new Random(11);

/** ModelWeights from a checkpoint's named tensors (Hugging Face names). */
function weightsFromTensors(tensors: Array<{ name: string; data: Float32Array }>, layers: number): ModelWeights {
  const t = new Map(tensors.map((x) => [x.name, x.data]));
  const get = (n: string) => { const v = t.get(n); if (!v) throw new Error(`missing ${n}`); return v; };
  const layer = (l: number): LayerWeights => {
    const p = `model.layers.${l}.`;
    return {
      inputNorm: get(`${p}input_layernorm.weight`), wq: get(`${p}self_attn.q_proj.weight`), wk: get(`${p}self_attn.k_proj.weight`),
      wv: get(`${p}self_attn.v_proj.weight`), wo: get(`${p}self_attn.o_proj.weight`), bq: null, bk: null, bv: null,
      postNorm: get(`${p}post_attention_layernorm.weight`), wGate: get(`${p}mlp.gate_proj.weight`), wUp: get(`${p}mlp.up_proj.weight`), wDown: get(`${p}mlp.down_proj.weight`),
    };
  };
  return { embed: get('model.embed_tokens.weight'), layers: Array.from({ length: layers }, (_, l) => layer(l)), finalNorm: get('model.norm.weight'), lmHead: get('lm_head.weight') };
}

const c: TrainConfig = { vocab: 17, hidden: 16, layers: 3, heads: 4, kvHeads: 4, headDim: 4, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 23 };
const ids = Array.from({ length: 23 }, () => rnd.int(0, 17));
const positions = Int32Array.from(ids, (_, i) => i);

async function model() {
  const m = cpuTrainModel(await Arena.create(32 << 20), c);
  m.initialise(9);
  for (const t of m.named) for (let i = 0; i < t.data.length; i++) t.data[i] += (rnd.next() * 2 - 1) * (t.shape.length === 1 ? 0.3 : 0.3);
  return m;
}

function compare(label: string, m: Awaited<ReturnType<typeof model>>, tied: HeadFusion, layout: DhaConfig): void {
  tied.writeModel(m);
  m.forward(Int32Array.from(ids), positions);
  const hidden = m.hidden, lm = m.p.lmHead;
  const ref = referenceLogits(parseModelConfig(hfConfig(c, 64)), weightsFromTensors(tied.checkpointTensors(m.named), c.layers), ids, undefined, layout);
  let worst = 0;
  for (let t = 0; t < ids.length; t++) {
    for (let v = 0; v < c.vocab; v++) {
      let s = 0;
      for (let e = 0; e < c.hidden; e++) s += hidden[t * c.hidden + e] * lm[v * c.hidden + e];
      const r = ref[t][v];
      assert.ok(Math.abs(s - r) <= 1e-4 * (1 + Math.abs(r)), `${label}: logit [${t}][${v}] ${s} vs reference ${r}`);
      worst = Math.max(worst, Math.abs(s - r));
    }
  }
  assert.ok(worst > 0, 'f32 against f64 differs somewhere: the comparison ran')
}

test('collapsed DHA (adaptive groups at 37.5 %, unequal K and V counts): tied TrainModel = float64 DHA reference', async () => {
  const m = await model();
  const { sigma, gram } = measureHeads(m, [{ ids: Int32Array.from(ids), positions }]);
  const { groups } = allocateHeads(gram, c.heads, 0.375);
  const layout = groupsLayout(groups, c.heads);
  assert.ok(layout.layers.some((l) => l.keyHeads !== l.valueHeads), `a layout with decoupled counts: ${JSON.stringify(layout.layers)}`);
  const f = HeadFusion.fusion(m, groups, sigma);
  // A fused (non-identity) state, so the collapse takes means of mixed heads.
  for (let i = 0; i < f.mix.length; i++) if (f.mix[i] === 1) f.mix[i] = 0.9;
  compare('dha 0.375', m, f.collapse(m), layout);
});

test('non-contiguous groups and the GQA mean-pool layout: tied TrainModel = float64 reference', async () => {
  const m = await model();
  const groups: HeadGroups[] = [
    { key: [[0, 3], [1, 2]], value: [[0], [1, 2, 3]] },
    { key: [[0, 1, 2, 3]], value: [[0, 2], [1], [3]] },
    { key: [[0], [1], [2], [3]], value: [[1, 3], [0, 2]] },
  ];
  const { sigma } = measureHeads(m, [{ ids: Int32Array.from(ids), positions }]);
  compare('non-contiguous', m, HeadFusion.fusion(m, groups, sigma).collapse(m), groupsLayout(groups, c.heads));
  const gqa = meanPoolGroups(c.layers, c.heads, 0.5);
  compare('gqa-meanpool 0.5', m, HeadFusion.fusion(m, gqa, sigma).collapse(m), groupsLayout(gqa, c.heads));
});

test('a wrong map is caught: the reference with a permuted query→key map differs', async () => {
  const m = await model();
  const groups: HeadGroups[] = Array.from({ length: 3 }, () => ({ key: [[0, 1], [2, 3]], value: [[0, 1], [2, 3]] }));
  const { sigma } = measureHeads(m, [{ ids: Int32Array.from(ids), positions }]);
  const tied = HeadFusion.fusion(m, groups, sigma).collapse(m);
  const layout = groupsLayout(groups, c.heads);
  layout.layers[1].queryToKey = [1, 1, 0, 0];
  let caught = '';
  try { compare('swapped', m, tied, layout); } catch (e) { caught = (e as Error).message; }
  assert.match(caught, /swapped: logit/);
});

test.run();
