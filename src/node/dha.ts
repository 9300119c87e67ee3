// `duet dha` in Node: loads a multi-head checkpoint of Duet's character vocabulary into a CPU
// training model, runs the conversion (src/dha/convert.ts) with training replicas on the other
// cores, and writes the result as a checkpoint folder (config.json with duet_dha, safetensors,
// the source's tokenizer files, a model card, dha.json with the full report) in one atomic file
// set. Refuses to overwrite a non-empty folder without force; nothing non-finite is saved.
// Resumable: every saveEvery steps the conversion's state (ConvertState) goes to dha-state/ in the
// same folder, as one atomic file set in `duet train`'s format (optimizer.bin + training_state.json,
// checkpoint-io.ts) with the settings and the source's hash to check a resume against; the state is
// removed once the converted model is written.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { DHA_KEY, dhaConfigJson } from '../dha/config.js';
import { modelCard } from '../dha/card.js';
import { conversionPlan, conversionSettings, convertHeads, stageSteps, type ConvertOptions, type ConvertProgress, type ConvertReport, type ConvertState } from '../dha/convert.js';
import { DuetError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { refuseDha } from '../model/config.js';
import { readJson } from '../model/files.js';
import { encodeSafetensorsF32 } from '../model/safetensors.js';
import { matrixF32 } from '../model/weights.js';
import { Arena } from '../train/arena.js';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../train/model.js';
import type { TrainPlan } from '../train/trainer.js';
import { tokenizerFiles, VOCAB_SIZE } from '../train/vocab.js';
import { recoverFileSet, writeFileSet } from './atomic.js';
import { assertFinite, hfConfig, loadState, stateFiles } from './checkpoint-io.js';
import { nodeModelFiles } from './files.js';
import { assertOutputFolder } from './output-folder.js';
import { startTrainingHelpers } from './train-pool.js';
import { createNodeGpu } from './gpu.js';
import { GpuGradients } from '../train/gpu-gradients.js';
import type { GpuContext } from '../gpu/context.js';

/** The manifest of a converted checkpoint's file set (written last: the commit point). */
export const DHA_MANIFEST = 'dha-manifest.json';
/** The saved state of an unfinished conversion (a folder in --out; its manifest is the commit point). */
export const DHA_STATE = 'dha-state';
const STATE_MANIFEST = `${DHA_STATE}/manifest.json`;
const STATE_JSON = `${DHA_STATE}/training_state.json`;

/** Where a resumed conversion goes on: the stage, and the steps done of the stage's steps. */
export interface DhaResumePoint { stage: 'fusion' | 'train'; step: number; steps: number }

export interface DhaConvertOptions extends ConvertOptions {
  /** The source checkpoint folder (multi-head, Duet's character vocabulary). */
  model: string;
  /** The folder written. */
  out: string;
  /** Replace what `out` holds. */
  force?: boolean;
  /** Continue the unfinished conversion saved in `out` (same source and options). */
  resume?: boolean;
  /** Steps between saves of the state (default 10; a stop at `until` saves too). */
  saveEvery?: number;
  /** Stop after this many steps in all (the state saved; report null); resume goes on. */
  until?: number;
  notice?: (message: string) => void;
  /** CPU replicas, one per thread (default every core). */
  threads?: number;
  /**
   * Where each step's gradients are computed (default 'cpu'): 'gpu' runs the model's forward and
   * backward on a WebGPU device (GpuGradients; no adapter is an error, never a CPU fallback), the
   * fusion, optimizer, validation and head similarity staying on the host.
   */
  device?: 'cpu' | 'gpu';
  /** Dawn's backend for device 'gpu' (e.g. 'opengles'; default: DUET_GPU_BACKEND, else Dawn's choice). */
  gpuBackend?: string;
  /** The command line, for the model card. */
  command?: string;
  onStart?: (info: { parameters: number; threads: number; device: 'cpu' | 'gpu'; adapter: string | null; steps: number; tokensPerStep: number; maxLength: number; resumedAt: DhaResumePoint | null }) => void;
  onProgress?: (p: ConvertProgress) => void;
}

export interface DhaConverted { out: string; report: ConvertReport; resumedAt: DhaResumePoint | null }
/** A run stopped at `until`: its state is saved in `out`. */
export interface DhaStopped { out: string; report: null; resumedAt: DhaResumePoint | null; step: number }

export async function convertToDha(o: DhaConvertOptions & { until?: undefined }): Promise<DhaConverted>;
export async function convertToDha(o: DhaConvertOptions): Promise<DhaConverted | DhaStopped>;
export async function convertToDha(o: DhaConvertOptions): Promise<DhaConverted | DhaStopped> {
  if (typeof o.out !== 'string' || o.out === '') throw new Error('out must be a folder path');
  if (typeof o.model !== 'string' || o.model === '') throw new Error('model must be a folder path');
  if (resolve(o.out) === resolve(o.model)) throw new Error(`${o.out}: is the source model's folder; write the conversion to a folder of its own`);
  const saveEvery = o.saveEvery ?? 10;
  if (!(Number.isInteger(saveEvery) && saveEvery >= 1)) throw new DuetError('saveEvery', `must be an integer ≥ 1 (got ${saveEvery})`);
  if (o.until !== undefined && !(Number.isInteger(o.until) && o.until >= 1)) throw new DuetError('until', `must be an integer ≥ 1 (got ${o.until})`);
  if (o.resume && o.force) throw new DuetError('resume', 'continues the conversion saved in out, force replaces it: set one');
  const saved = existsSync(join(o.out, STATE_MANIFEST));
  if (o.resume && !saved) {
    // A finished conversion removed its state: there is nothing left to do.
    if (existsSync(join(o.out, DHA_MANIFEST))) throw new DuetError('resume', `is set but ${o.out} holds a finished conversion (${DHA_MANIFEST}, no ${DHA_STATE}/): nothing to resume; its model is ready, or set force instead to convert again`);
    throw new DuetError('resume', `is set but ${o.out} holds no saved conversion state (${STATE_MANIFEST})`);
  }
  if (!o.resume) assertOutputFolder(o.out, { force: o.force, what: 'the converted model', hint: `add --force to replace it${saved ? ' or --resume to continue the unfinished conversion it holds' : ''}` });
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1)) throw new Error(`threads must be a positive integer (got ${o.threads})`);
  const device = o.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'gpu') throw new DuetError('device', `must be cpu or gpu (got ${JSON.stringify(o.device)})`);
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
  const settings = conversionSettings(o, plan);
  const model = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(plan.model, k)), plan.model);
  const w = ckpt.weights;
  model.p.embed.set(matrixF32(w.embed)); model.p.finalNorm.set(w.finalNorm); model.p.lmHead.set(matrixF32(w.lmHead));
  w.layers.forEach((lw, l) => {
    const p = model.p.layers[l];
    p.inputNorm.set(lw.inputNorm); p.wq.set(matrixF32(lw.wq)); p.wk.set(matrixF32(lw.wk)); p.wv.set(matrixF32(lw.wv)); p.wo.set(matrixF32(lw.wo));
    p.postNorm.set(lw.postNorm); p.wGate.set(matrixF32(lw.wGate)); p.wUp.set(matrixF32(lw.wUp)); p.wDown.set(matrixF32(lw.wDown));
  });
  // On the GPU one device computes each step; the CPU side needs no helper threads.
  const threads = device === 'gpu' ? 1 : Math.min(o.threads ?? availableParallelism(), availableParallelism());
  const sp = model.params;
  const sourceHash = createHash('sha256').update(new Uint8Array(sp.buffer, sp.byteOffset, sp.byteLength)).digest('hex');
  const { fusion: fusionSteps } = stageSteps(o, plan.tokensPerStep);
  const resume = o.resume ? loadConversionState(o.out, plan, sp.length, fusionSteps, settings, sourceHash, threads, device, o.notice ?? (() => {})) : undefined;
  const resumedAt: DhaResumePoint | null = resume
    ? (resume.stage === 'fusion' ? { stage: 'fusion', step: resume.step, steps: fusionSteps } : { stage: 'train', step: resume.step - fusionSteps, steps: plan.steps - fusionSteps })
    : null;
  let gpu: GpuContext | null = null;
  if (device === 'gpu') {
    const got = await createNodeGpu({ backend: o.gpuBackend });
    if (!got.gpu) throw new DuetError('device', `'gpu': no WebGPU adapter (${got.reason})`, 'unavailable');
    gpu = got.gpu;
  }
  o.onStart?.({ parameters: model.params.length, threads, device, adapter: gpu?.adapterDescription ?? null, steps: plan.steps, tokensPerStep: plan.tokensPerStep, maxLength: plan.model.maxRows, resumedAt });
  // A fresh run's state must not be mistaken for the one it replaces, should it stop before its first save.
  if (!resume) rmSync(join(o.out, DHA_STATE), { recursive: true, force: true });
  const save = (s: ConvertState) => {
    const fusion = s.fusion && { mix: [...s.fusion.mix], mixM: [...s.fusion.mixM], mixV: [...s.fusion.mixV], lambda: [...s.fusion.lambda], phi: [...s.fusion.phi] };
    for (const [name, a] of Object.entries(fusion ?? {})) assertFinite(a, `conversion state (fusion ${name})`);
    const files = stateFiles({ step: s.step, params: s.params, m: s.m, v: s.v },
      { stage: s.stage, settings, source: { path: resolve(o.model), sha256: sourceHash }, threads, device, plan, fusion, progress: s.progress });
    writeFileSet(o.out, { [`${DHA_STATE}/optimizer.bin`]: files['optimizer.bin'], [STATE_JSON]: files['training_state.json'] }, STATE_MANIFEST, { stage: s.stage, step: s.step });
  };
  const pool = threads > 1 ? await startTrainingHelpers(plan, threads - 1) : null;
  let result;
  try {
    const gradients = gpu ? GpuGradients.create(plan, gpu) : undefined;
    result = await convertHeads(model, plan, o, pool?.helpers ?? [], o.onProgress ?? (() => {}), { resume, saveEvery, save, until: o.until, gradients });
  } finally {
    await pool?.stop();
    gpu?.destroy();
  }
  if (!result) return { out: o.out, report: null, resumedAt, step: o.until! };
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
  // The model is committed: the state is of no more use (a resume now says the conversion is done).
  rmSync(join(o.out, DHA_STATE), { recursive: true, force: true });
  return { out: o.out, report, resumedAt };
}

type Settings = ReturnType<typeof conversionSettings>;

/**
 * The state saved in `out` by an unfinished conversion, checked against this run: same model
 * shape, options (every setting, defaults filled in) and source weights, or an error naming what
 * differs. A save interrupted midway is finished or discarded first (recoverFileSet). loadState
 * checks the step, the parameter count, the model shape and optimizer.bin; conversionFields the rest.
 */
function loadConversionState(out: string, plan: TrainPlan, parameters: number, fusionSteps: number, settings: Settings, sourceHash: string, threads: number,
  device: 'cpu' | 'gpu', notice: (m: string) => void): ConvertState {
  recoverFileSet(out, STATE_MANIFEST);
  const t = loadState(join(out, DHA_STATE), parameters, plan.model);
  if (!t) throw new DuetError('resume', `is set but ${out} holds no saved conversion state (${STATE_JSON})`);
  const path = join(out, STATE_JSON);
  const meta = JSON.parse(readFileSync(path, 'utf8')) as { settings?: Settings; source?: { path?: unknown; sha256?: unknown } };
  const differ = (Object.keys(settings) as Array<keyof Settings>)
    .filter((k) => JSON.stringify(meta.settings?.[k]) !== JSON.stringify(settings[k]))
    .map((k) => `${k} ${JSON.stringify(settings[k])} (saved: ${JSON.stringify(meta.settings?.[k])})`);
  if (meta.source?.sha256 !== sourceHash) differ.push(`the source model's weights (saved from ${meta.source?.path})`);
  if (differ.length) throw new DuetError('resume', `${path}: the saved conversion was made with other arguments: this run has ${differ.join(', ')}; resume with the same arguments, or set force to start again`);
  const saved = conversionFields(meta as Record<string, unknown>, path, { ...plan.model, method: settings.method, step: t.step, fusionSteps, steps: plan.steps });
  if (saved.device !== device) notice(`resuming on the ${device === 'gpu' ? 'GPU' : 'CPU'}, the saved state was made on the ${saved.device === 'gpu' ? 'GPU' : 'CPU'}: the result agrees with an uninterrupted run only within float rounding`);
  else if (saved.threads !== threads) notice(`resuming with ${threads} thread${threads > 1 ? 's' : ''}, the saved state was made with ${saved.threads}: the result agrees bit for bit with an uninterrupted run only at the same count`);
  return { ...saved.state, step: t.step, params: t.params, m: t.m, v: t.v };
}

/**
 * training_state.json's fields of a conversion (beyond loadState's), each checked before use: the
 * stage fits the plan and the step, threads and device, ω and the multipliers as long as the model
 * makes them (finite, second moments ≥ 0), and every field of progress (token counts, losses, a
 * history point per step done). A refusal names the file and the field.
 */
function conversionFields(meta: Record<string, unknown>, path: string,
  run: { layers: number; heads: number; method: string; step: number; fusionSteps: number; steps: number }) {
  const fail = (field: string, why: string, got: unknown): never => {
    const was = got === undefined ? 'missing' : `got ${JSON.stringify(got).slice(0, 80)}`;
    throw new Error(`${path}: field "${field}" ${why} (${was}); the saved state is damaged: set force to start again`);
  };
  const object = (v: unknown, field: string) => (typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : fail(field, 'must be an object', v));
  const list = (v: unknown, field: string, length?: number) => (Array.isArray(v) && (length === undefined || v.length === length) ? v as unknown[]
    : fail(field, `must be an array${length === undefined ? '' : ` of ${length} values`}`, v));
  const int = (v: unknown, field: string, min = 0, max = Number.MAX_SAFE_INTEGER) => (Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max ? v as number
    : fail(field, min === max ? `must be ${min}` : `must be an integer from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ' up'}`, v));
  const num = (v: unknown, field: string, min = -Infinity) => (typeof v === 'number' && Number.isFinite(v) && v >= min ? v : fail(field, `must be a finite number${min > -Infinity ? ` ≥ ${min}` : ''}`, v));
  const maybe = (v: unknown, field: string, needed: boolean) => (v === null && !needed ? null : num(v, field));
  const stageOf = (v: unknown, field: string): 'fusion' | 'train' => (v === 'fusion' || v === 'train' ? v : fail(field, 'must be "fusion" or "train"', v));
  /** A JSON array of numbers as a typed array (checked after the conversion: a float64 beyond float32's range is Infinity there). */
  const floats = <T extends Float32Array | Float64Array>(v: unknown, field: string, length: number, type: { from(a: number[]): T }, min = -Infinity): T => {
    const a = list(v, field, length);
    a.forEach((x, i) => { if (typeof x !== 'number') fail(`${field}[${i}]`, 'must be a number', x); });
    const out = type.from(a as number[]);
    out.forEach((x, i) => num(x, `${field}[${i}]`, min));
    return out;
  };

  const { layers, heads, step, fusionSteps } = run;
  const stage = stageOf(meta.stage, 'stage');
  if (stage === 'fusion' ? !(run.method === 'dha' && step <= fusionSteps) : !(step >= fusionSteps && step < run.steps)) {
    fail('stage', `after step ${step} does not fit this ${run.method} plan (${fusionSteps} fusion + ${run.steps - fusionSteps} training steps)`, stage);
  }
  const threads = int(meta.threads, 'threads', 1);
  const device = meta.device === undefined ? 'cpu' : meta.device === 'cpu' || meta.device === 'gpu' ? meta.device : fail('device', 'must be "cpu" or "gpu"', meta.device);
  let fusion: ConvertState['fusion'] = null;
  if (stage === 'fusion') {
    const f = object(meta.fusion, 'fusion'), mixes = layers * 2 * heads * heads, sides = layers * 2;
    fusion = {
      mix: floats(f.mix, 'fusion.mix', mixes, Float32Array), mixM: floats(f.mixM, 'fusion.mixM', mixes, Float32Array), mixV: floats(f.mixV, 'fusion.mixV', mixes, Float32Array, 0),
      lambda: floats(f.lambda, 'fusion.lambda', sides, Float64Array), phi: floats(f.phi, 'fusion.phi', sides, Float64Array),
    };
  }
  const p = object(meta.progress, 'progress');
  const dhaTrained = run.method === 'dha' && stage === 'train';
  const collapse = p.constraintsAtCollapse === null && !dhaTrained ? null
    : list(p.constraintsAtCollapse, 'progress.constraintsAtCollapse', layers).map((c, l) => {
      const o = object(c, `progress.constraintsAtCollapse[${l}]`);
      return { key: num(o.key, `progress.constraintsAtCollapse[${l}].key`), value: num(o.value, `progress.constraintsAtCollapse[${l}].value`) };
    });
  const curve = list(p.curve, 'progress.curve').map((c, i) => {
    const o = object(c, `progress.curve[${i}]`), at = `progress.curve[${i}]`;
    const point = { stage: stageOf(o.stage, `${at}.stage`), step: int(o.step, `${at}.step`, 0, step), tokens: int(o.tokens, `${at}.tokens`), validationLoss: num(o.validationLoss, `${at}.validationLoss`) };
    return o.constraint === undefined ? point : { ...point, constraint: num(o.constraint, `${at}.constraint`) };
  });
  const history = list(p.history, 'progress.history', step).map((h, i) => {
    const o = object(h, `progress.history[${i}]`), at = `progress.history[${i}]`;
    return { stage: stageOf(o.stage, `${at}.stage`), step: int(o.step, `${at}.step`, i + 1, i + 1), tokens: int(o.tokens, `${at}.tokens`), loss: num(o.loss, `${at}.loss`) };
  });
  const progress: ConvertState['progress'] = {
    fusionTokens: int(p.fusionTokens, 'progress.fusionTokens'), trainTokens: int(p.trainTokens, 'progress.trainTokens'),
    fusionStart: maybe(p.fusionStart, 'progress.fusionStart', run.method === 'dha'), fused: maybe(p.fused, 'progress.fused', dhaTrained),
    converted: maybe(p.converted, 'progress.converted', stage === 'train'), constraintsAtCollapse: collapse, curve, history, seconds: num(p.seconds, 'progress.seconds', 0),
  };
  return { threads, device, state: { stage, fusion, progress } };
}
