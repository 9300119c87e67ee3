// `duet dha` in Node: loads a multi-head checkpoint of Duet's character vocabulary into a CPU
// training model, runs the conversion (src/dha/convert.ts) with training replicas on the other
// cores, and writes the result as a checkpoint folder (config.json with duet_dha, safetensors,
// the source's tokenizer files, a model card, dha.json with the full report) in one atomic file
// set. Refuses to overwrite a non-empty folder without force; nothing non-finite is saved.
import { availableParallelism } from 'node:os';
import { basename, resolve } from 'node:path';
import { DHA_KEY, dhaConfigJson } from '../dha/config.js';
import { modelCard } from '../dha/card.js';
import { conversionPlan, convertHeads, type ConvertOptions, type ConvertProgress, type ConvertReport } from '../dha/convert.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { refuseDha } from '../model/config.js';
import { readJson } from '../model/files.js';
import { encodeSafetensorsF32 } from '../model/safetensors.js';
import { matrixF32 } from '../model/weights.js';
import { Arena } from '../train/arena.js';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../train/model.js';
import { tokenizerFiles, VOCAB_SIZE } from '../train/vocab.js';
import { writeFileSet } from './atomic.js';
import { hfConfig } from './checkpoint-io.js';
import { nodeModelFiles } from './files.js';
import { assertOutputFolder } from './output-folder.js';
import { startTrainingHelpers } from './train-pool.js';

/** The manifest of a converted checkpoint's file set (written last: the commit point). */
export const DHA_MANIFEST = 'dha-manifest.json';

export interface DhaConvertOptions extends ConvertOptions {
  /** The source checkpoint folder (multi-head, Duet's character vocabulary). */
  model: string;
  /** The folder written. */
  out: string;
  /** Replace what `out` holds. */
  force?: boolean;
  /** CPU replicas, one per thread (default every core). */
  threads?: number;
  /** The command line, for the model card. */
  command?: string;
  onStart?: (info: { parameters: number; threads: number; steps: number; tokensPerStep: number; maxLength: number }) => void;
  onProgress?: (p: ConvertProgress) => void;
}

export async function convertToDha(o: DhaConvertOptions): Promise<{ out: string; report: ConvertReport }> {
  if (typeof o.out !== 'string' || o.out === '') throw new Error('out must be a folder path');
  if (typeof o.model !== 'string' || o.model === '') throw new Error('model must be a folder path');
  if (resolve(o.out) === resolve(o.model)) throw new Error(`${o.out}: is the source model's folder; write the conversion to a folder of its own`);
  assertOutputFolder(o.out, { force: o.force, what: 'the converted model', hint: 'add --force to replace it' });
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1)) throw new Error(`threads must be a positive integer (got ${o.threads})`);
  const files = nodeModelFiles(o.model);
  const ckpt = await loadCheckpoint(files);
  const cfg = ckpt.config, at = `${o.model}/config.json`;
  refuseDha(cfg, 'the DHA conversion', at);
  if (cfg.numKvHeads !== cfg.numHeads) {
    throw new Error(`${at}: num_key_value_heads ${cfg.numKvHeads} ≠ num_attention_heads ${cfg.numHeads}; DHA converts a multi-head checkpoint (its key and value heads are shared already)`);
  }
  if (cfg.attentionBias) throw new Error(`${at}: q/k/v biases are not supported by the conversion (the trainer keeps biases frozen)`);
  if (cfg.slidingWindow !== null) throw new Error(`${at}: sliding_window is not supported by the conversion (the trainer attends causally over the whole sequence)`);
  if (cfg.ropeScaling !== null) throw new Error(`${at}: rope_scaling is not supported by the conversion (the saved config.json would lose it)`);
  if (cfg.tieWordEmbeddings) throw new Error(`${at}: tied word embeddings are not supported by the conversion (the trainer holds lm_head apart)`);
  // The training data are Duet's character-level tasks (src/train/data.ts).
  const ours = JSON.stringify((tokenizerFiles().tokenizer as { model: { vocab: object } }).model.vocab);
  const theirs = (await files.exists('tokenizer.json')) ? JSON.stringify(((await readJson(files, 'tokenizer.json')) as { model?: { vocab?: object } }).model?.vocab ?? null) : 'none';
  if (cfg.vocabSize !== VOCAB_SIZE || theirs !== ours) {
    throw new Error(`${o.model}: the conversion trains on Duet's character-level task data, which needs the bundled model's vocabulary (${VOCAB_SIZE} tokens, tokenizer.json as \`duet train\` writes it); this checkpoint has vocab_size ${cfg.vocabSize}${theirs === ours ? '' : ' and another tokenizer'}`);
  }
  const source: TrainConfig = {
    vocab: cfg.vocabSize, hidden: cfg.hiddenSize, layers: cfg.numLayers, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim,
    intermediate: cfg.intermediateSize, eps: cfg.rmsNormEps, ropeTheta: cfg.ropeTheta, maxRows: 0,
  };
  const plan = conversionPlan(source, cfg.maxPositionEmbeddings, o);
  const model = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(plan.model, k)), plan.model);
  const w = ckpt.weights;
  model.p.embed.set(matrixF32(w.embed)); model.p.finalNorm.set(w.finalNorm); model.p.lmHead.set(matrixF32(w.lmHead));
  w.layers.forEach((lw, l) => {
    const p = model.p.layers[l];
    p.inputNorm.set(lw.inputNorm); p.wq.set(matrixF32(lw.wq)); p.wk.set(matrixF32(lw.wk)); p.wv.set(matrixF32(lw.wv)); p.wo.set(matrixF32(lw.wo));
    p.postNorm.set(lw.postNorm); p.wGate.set(matrixF32(lw.wGate)); p.wUp.set(matrixF32(lw.wUp)); p.wDown.set(matrixF32(lw.wDown));
  });
  const threads = Math.min(o.threads ?? availableParallelism(), availableParallelism());
  o.onStart?.({ parameters: model.params.length, threads, steps: plan.steps, tokensPerStep: plan.tokensPerStep, maxLength: plan.model.maxRows });
  const pool = threads > 1 ? await startTrainingHelpers(plan, threads - 1) : null;
  let result;
  try {
    result = await convertHeads(model, plan, o, pool?.helpers ?? [], o.onProgress);
  } finally {
    await pool?.stop();
  }
  const { report, tensors } = result;
  // The continued arm kept every head: a plain multi-head checkpoint.
  const config = { ...hfConfig(source, cfg.maxPositionEmbeddings), ...(report.method === 'continued' ? {} : { [DHA_KEY]: dhaConfigJson(report.layout) }) };
  const copied: Record<string, Uint8Array | string> = {};
  for (const name of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json']) {
    if (await files.exists(name)) copied[name] = await files.readText(name);
  }
  const out: Record<string, Uint8Array | string> = {
    ...copied,
    'config.json': `${JSON.stringify(config, null, 2)}\n`,
    'model.safetensors': encodeSafetensorsF32(tensors, { format: 'pt', duet_dha_method: report.method, duet_dha_budget: String(report.budget) }),
    'README.md': modelCard(report, { source: basename(resolve(o.model)), headDim: cfg.headDim, command: o.command ?? `duet dha --method ${report.method} --budget ${report.budget}` }),
    'dha.json': `${JSON.stringify({ source: o.model, ...report, plan: result.plan }, null, 1)}\n`,
  };
  writeFileSet(o.out, out, DHA_MANIFEST, { method: report.method, budget: report.budget });
  return { out: o.out, report };
}
