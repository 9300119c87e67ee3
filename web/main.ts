// The demo page: loads a model (served over HTTP, or a folder the user picks), a head pattern, and
// runs Duet with WebGPU (navigator.gpu) for the GPU side and a Web Worker for the WebAssembly side.
// `window.duet` mirrors the page's state for scripts and tests.
import {
  allHeads, binarize, countStreaming, httpModelFiles, fillerStyleFor, formatBytes, heatmap, loadModel, meanSampledFraction, parsePattern, pickedModelFiles, score, taskPrompt,
  type DeviceChoice, type DuetModel, type ModelOptions, type HeadKinds, type HeadPattern, type ModelFiles, type Placement, type StreamingWindow,
} from 'duet';

/** What the page is doing, for people (the status line) and for scripts (window.duet). */
export interface DuetStatus {
  state: 'loading' | 'ready' | 'running' | 'done' | 'error';
  /** Generated text of the last run (token ids when the model has no tokenizer). */
  text: string;
  tokens: number;
  /** Work of the last run: WebGPU compute dispatches and WebAssembly kernel calls. */
  gpuDispatches: number;
  cpuKernelCalls: number;
  error: string | null;
  notices: string[];
  model: string | null;
  placement: Placement | null;
  device: string | null;
  /** The model's head description (methods, offloading and its threads). */
  heads: string | null;
  prefillMs: number | null;
  tokensPerSecond: number | null;
  /** offloaded: bytes of offloaded caches (part of cpu); sampled: mean fraction of their keys attended per decode step (null without offloading). */
  kv: { gpu: number; cpu: number; full: number; offloaded: number; sampled: number | null } | null;
  passkey: { expected: string; found: boolean } | null;
}

declare global {
  interface Window { duet: DuetStatus }
}

const status: DuetStatus = {
  state: 'loading', text: '', tokens: 0, gpuDispatches: 0, cpuKernelCalls: 0, error: null, notices: [],
  model: null, placement: null, device: null, heads: null, prefillMs: null, tokensPerSecond: null, kv: null, passkey: null,
};
window.duet = status;

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page: #${id} is missing`);
  return e as T;
}

const ui = {
  env: el('env'),
  servedModelName: el('served-model-name'),
  modelServed: el<HTMLInputElement>('model-served'),
  modelFolderChoice: el<HTMLInputElement>('model-folder-choice'),
  modelFolder: el<HTMLInputElement>('model-folder'),
  modelInfo: el('model-info'),
  patternSource: el<HTMLSelectElement>('pattern-source'),
  patternServedOption: el<HTMLOptionElement>('pattern-served-option'),
  patternFiles: el<HTMLInputElement>('pattern-files'),
  sparsity: el<HTMLInputElement>('sparsity'),
  patternInfo: el('pattern-info'),
  placement: el<HTMLSelectElement>('placement'),
  device: el<HTMLSelectElement>('device'),
  weights: el<HTMLSelectElement>('weights'),
  offload: el<HTMLSelectElement>('offload'),
  prompt: el<HTMLTextAreaElement>('prompt'),
  maxTokens: el<HTMLInputElement>('max-tokens'),
  generate: el<HTMLButtonElement>('generate'),
  passkeyLength: el<HTMLInputElement>('passkey-length'),
  passkeyDepth: el<HTMLInputElement>('passkey-depth'),
  passkey: el<HTMLButtonElement>('passkey'),
  status: el('status'),
  error: el('error'),
  notices: el('notices'),
  passkeyResult: el('passkey-result'),
  output: el('output'),
  promptDetails: el<HTMLDetailsElement>('prompt-details'),
  promptShown: el('prompt-shown'),
  heatmapKinds: el('heatmap-kinds'),
  heatmapAlphas: el('heatmap-alphas'),
};

const params = new URLSearchParams(location.search);
/** ?worker=0 runs the WebAssembly kernels on the page's main thread (for comparison and debugging). */
const useWorker = params.get('worker') !== '0';

interface Served { model: { name: string; url: string }; pattern: { name: string; url: string } | null }
let served: Served | null = null;
/** The loaded model (its placement and heads are those of `loaded.key`); runs reload it when the settings change. */
let loaded: { model: DuetModel; files: ModelFiles; key: string } | null = null;
let modelId = 0;
let pattern: HeadPattern | null = null;
/** Why the chosen pattern could not be used (runs refuse to start until it is fixed). */
let patternError: string | null = null;
let busy = false;

// ---------- small helpers ----------

function setStatus(state: DuetStatus['state'], message: string): void {
  status.state = state;
  ui.status.textContent = message;
}

function showError(e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  status.error = message;
  ui.error.textContent = message;
  ui.error.hidden = false;
  console.error(e);
}

function clearError(): void {
  status.error = null;
  ui.error.hidden = true;
  ui.error.textContent = '';
}

function notice(message: string): void {
  status.notices.push(message);
  ui.notices.hidden = false;
  const p = document.createElement('div');
  p.textContent = message;
  ui.notices.append(p);
}

function setBusy(on: boolean): void {
  busy = on;
  for (const c of [ui.generate, ui.passkey]) c.disabled = on || !loaded;
  for (const c of [ui.modelServed, ui.modelFolderChoice, ui.modelFolder, ui.patternSource, ui.patternFiles, ui.sparsity,
    ui.placement, ui.device, ui.weights, ui.offload, ui.prompt, ui.maxTokens, ui.passkeyLength, ui.passkeyDepth]) c.disabled = on;
  if (!served) ui.modelServed.disabled = true;
}

function set(id: string, text: string): void { el(id).textContent = text; }

function numberInput(input: HTMLInputElement, what: string, min: number, max: number, integer: boolean): number {
  const v = Number(input.value);
  if (input.value.trim() === '' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new Error(`${what} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max} (got "${input.value}")`);
  }
  return v;
}

// ---------- the CPU worker ----------

/** Starts a Web Worker for the WebAssembly kernels (the library falls back to this thread if it does not start). */
const cpuWorker = useWorker && typeof Worker !== 'undefined'
  ? () => new Worker(new URL('cpu-worker.js', location.href), { type: 'module' }) : undefined;
/** Kernel threads for the offloaded caches (used when the page is cross-origin isolated). */
const kernelWorker = typeof Worker !== 'undefined' ? () => new Worker(new URL('kernel-worker.js', location.href), { type: 'module' }) : undefined;

async function describeEnvironment(): Promise<void> {
  const parts: string[] = [];
  const gpu = (navigator as Navigator).gpu;
  if (!gpu) parts.push('WebGPU: not available in this browser; everything runs on the CPU (WebAssembly)');
  else {
    try {
      const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
      if (!adapter) parts.push('WebGPU: no adapter; everything runs on the CPU (WebAssembly)');
      else {
        const i = adapter.info;
        parts.push(`WebGPU adapter: ${[i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'unnamed'}`);
      }
    } catch (e) {
      parts.push(`WebGPU: adapter request failed (${(e as Error).message}); everything runs on the CPU`);
    }
  }
  parts.push(useWorker ? 'CPU kernels in a Web Worker' : 'CPU kernels on the main thread (?worker=0)');
  parts.push(`cross-origin isolated: ${self.crossOriginIsolated ? 'yes' : 'no'}`);
  ui.env.textContent = parts.join(' · ');
}

// ---------- model ----------

function pageNotice(m: string): void {
  notice(m.startsWith('no WebGPU adapter') ? `${m}. Everything runs on the CPU (WebAssembly).` : m);
}

/** Loads the model with the given placement and heads (the library reads the files; HTTP ones are cached). */
async function placeModel(files: ModelFiles, key: string, o: { placement?: Placement; device?: DeviceChoice; pattern?: HeadPattern; sparsity?: number; offload?: ModelOptions['offload'] },
  onProgress?: (done: number, total: number) => void): Promise<DuetModel> {
  disposeModel();
  const model = await loadModel(files, {
    ...o, weights: (ui.weights.value || undefined) as ModelOptions['weights'], cpuWorker, kernelWorker, notice: pageNotice,
    onProgress: (e) => { if (e.step === 'weights' || e.step === 'download') onProgress?.(e.done, e.total); },
  });
  loaded = { model, files, key };
  return model;
}

async function openModel(files: ModelFiles, label: string): Promise<void> {
  disposeModel();
  status.model = null;
  setBusy(true);
  clearError();
  setStatus('loading', `Loading ${label}…`);
  ui.modelInfo.textContent = `Loading ${label}…`;
  try {
    modelId++;
    // Full attention on the CPU first: the model's shape tells which patterns fit; runs place it as asked.
    const model = await placeModel(files, '', { device: 'cpu' }, (done, total) => {
      ui.modelInfo.textContent = `Loading ${label}: ${formatBytes(done)} of ${formatBytes(total)}`;
    });
    status.model = label;
    const c = model.info.config;
    ui.modelInfo.textContent = `${label}: ${c.modelType}, ${c.numLayers} layers × ${c.numKvHeads} KV heads (${c.numHeads} query heads), `
      + `head dim ${c.headDim}, vocabulary ${c.vocabSize}, context up to ${c.maxPositionEmbeddings} tokens`
      + (model.info.hasTokenizer ? '' : '. No tokenizer.json: type the prompt as token ids, e.g. 1,2,3');
    setStatus('ready', 'Ready. Press Generate or Passkey test.');
    try { await refreshPattern(); } catch (e) { showError(e); }
  } catch (e) {
    ui.modelInfo.textContent = `Could not load ${label}.`;
    showError(e);
    setStatus('error', 'The model did not load (see the message below).');
  } finally {
    setBusy(false);
  }
}

// ---------- pattern ----------

async function readPattern(): Promise<HeadPattern | null> {
  if (!loaded) return null;
  const { numLayers, numKvHeads } = loaded.model.info.config;
  const source = ui.patternSource.value;
  if (source === 'none') return null;
  if (source === 'served') {
    if (!served?.pattern) return null;
    const base = new URL(served.pattern.url, location.href);
    const get = async (name: string) => {
      const r = await fetch(new URL(name, base));
      if (r.status === 404) return null;
      if (!r.ok) throw new Error(`${served!.pattern!.name}/${name}: HTTP ${r.status}`);
      return r.text();
    };
    const tsv = await get('full_attention_heads.tsv');
    if (tsv === null) throw new Error(`${served.pattern.name}/full_attention_heads.tsv: missing on the server`);
    return parsePattern(tsv, await get('config.json'), numLayers, numKvHeads, served.pattern.name);
  }
  const files = Array.from(ui.patternFiles.files ?? []);
  if (files.length === 0) return null;
  const tsv = files.find((f) => f.name.endsWith('.tsv'));
  const cfg = files.find((f) => f.name === 'config.json') ?? files.find((f) => f.name.endsWith('.json'));
  if (!tsv) throw new Error('full_attention_heads.tsv: not among the uploaded files (pick it together with config.json)');
  return parsePattern(await tsv.text(), cfg ? await cfg.text() : null, numLayers, numKvHeads, 'uploaded pattern');
}

/** The offload choice as loadModel's option: MagicPIG with its defaults, exact TopK at 5%, or none. */
function offloadChoice(): ModelOptions['offload'] {
  if (ui.offload.value === 'magicpig') return true;
  if (ui.offload.value === 'topk') return { topk: { fraction: 0.05 } };
  return undefined;
}

function sparsityValue(): number | undefined {
  if (ui.sparsity.value.trim() === '') return undefined;
  return numberInput(ui.sparsity, 'Sparsity', 0, 1, false);
}

/** Head kinds and window for the current pattern choice and sparsity. */
function currentHeads(): { kinds: HeadKinds; window?: StreamingWindow; description: string } {
  const { numLayers, numKvHeads } = loaded!.model.info.config;
  if (!pattern) return { kinds: allHeads(numLayers, numKvHeads, true), description: 'full attention (no pattern)' };
  const sparsity = sparsityValue();
  const kinds = binarize(pattern.alphas, { sparsity });
  const streaming = countStreaming(kinds);
  return {
    kinds, window: { sink: pattern.sink, recent: pattern.recent },
    description: `${streaming} of ${numLayers * numKvHeads} KV heads streaming (${sparsity === undefined ? 'gate α < 0.5' : `sparsity ${sparsity}`}); `
      + `streaming window: ${pattern.sink} sink + ${pattern.recent} recent tokens`,
  };
}

async function refreshPattern(): Promise<void> {
  ui.patternFiles.hidden = ui.patternSource.value !== 'upload';
  if (!loaded) return;
  try {
    patternError = null;
    pattern = await readPattern();
  } catch (e) {
    pattern = null;
    patternError = e instanceof Error ? e.message : String(e);
    ui.heatmapKinds.textContent = '';
    ui.heatmapAlphas.textContent = '';
    ui.patternInfo.textContent = 'No valid pattern: see the error.';
    throw e;
  }
  drawHeads();
}

function drawHeads(): void {
  const { numLayers, numKvHeads } = loaded!.model.info.config;
  const heads = currentHeads();
  ui.patternInfo.textContent = heads.description;
  const rowNames = Array.from({ length: numLayers }, (_, l) => `layer ${l}`);
  const colNames = Array.from({ length: numKvHeads }, (_, h) => `${h}`);
  const streaming = countStreaming(heads.kinds);
  ui.heatmapKinds.innerHTML = heatmap(heads.kinds.map((row) => row.map((r) => (r ? 1 : 0))), {
    title: `${streaming} of ${numLayers * numKvHeads} heads streaming`,
    rowLabel: 'layer', colLabel: 'KV head', rowNames, colNames,
  });
  ui.heatmapAlphas.innerHTML = pattern
    ? heatmap(pattern.alphas, { title: 'Gate values α', rowLabel: 'layer', colLabel: 'KV head', rowNames, colNames, annotate: true })
    : '';
}

// ---------- running ----------

function disposeModel(): void {
  void loaded?.model.dispose();
  loaded = null;
}

/** The model placed as the page's settings ask (reloaded from its files when they changed). */
async function modelFor(placement: Placement, device: DeviceChoice): Promise<DuetModel> {
  const sparsity = sparsityValue();
  const key = JSON.stringify([modelId, placement, device, ui.weights.value, ui.offload.value, ui.patternSource.value, pattern?.alphas ?? null, sparsity ?? null]);
  if (loaded!.key === key) return loaded!.model;
  const files = loaded!.files;
  try {
    return await placeModel(files, key, { placement, device, pattern: pattern ?? undefined, sparsity: pattern ? sparsity : undefined, offload: offloadChoice() });
  } catch (e) {
    // Keep the page usable (e.g. packed weights the GPU does not take yet): the model again on the
    // CPU, as it was opened; the next run places it as asked again. The error is the original one.
    await placeModel(files, '', { device: 'cpu' }).catch(() => {});
    throw e;
  }
}

interface RunSpec {
  ids: number[];
  maxTokens: number;
  label: string;
  passkey?: string;
}

function resetResults(): void {
  status.text = ''; status.tokens = 0; status.gpuDispatches = 0; status.cpuKernelCalls = 0;
  status.prefillMs = null; status.tokensPerSecond = null; status.kv = null; status.passkey = null;
  ui.output.textContent = '';
  ui.passkeyResult.hidden = true;
  for (const id of ['stat-device', 'stat-prompt', 'stat-prefill', 'stat-tokens', 'stat-tps', 'kv-gpu', 'kv-cpu', 'kv-total',
    'kv-full', 'kv-saving', 'kv-offloaded', 'kv-sampled', 'work-gpu', 'work-cpu']) set(id, '–');
}

async function run(prepare: () => RunSpec): Promise<void> {
  if (busy || !loaded) return;
  clearError();
  resetResults();
  setBusy(true);
  try {
    if (patternError) throw new Error(`The head pattern is not usable: ${patternError}`);
    const spec = prepare();
    const placement = ui.placement.value as Placement;
    setStatus('running', `Preparing the engine (${placement})…`);
    const model = await modelFor(placement, ui.device.value as DeviceChoice);
    const info = model.info;
    status.placement = info.placement;
    status.device = info.device;
    status.heads = info.heads;
    set('stat-device', `${info.placement} · ${info.device}${info.placement === 'split' ? ` + ${info.cpu}` : ''}`);
    set('stat-prompt', `${spec.ids.length} tokens`);
    setStatus('running', `Prefilling ${spec.ids.length} tokens (${spec.label})…`);
    let firstTokenAt = 0;
    const generation = model.generate(spec.ids, { maxTokens: spec.maxTokens });
    for await (const d of generation) {
      const now = performance.now();
      if (status.tokens === 0) firstTokenAt = now;
      status.tokens++;
      status.text += info.hasTokenizer ? d.text : `${d.id} `;
      ui.output.textContent = status.text;
      set('stat-tokens', `${status.tokens}`);
      if (status.tokens > 1) set('stat-tps', `${((status.tokens - 1) / ((now - firstTokenAt) / 1000)).toFixed(1)} tokens/s`);
      setStatus('running', `Generating… ${status.tokens} token${status.tokens === 1 ? '' : 's'}`);
    }
    const r = await generation.result();
    if (info.hasTokenizer) { status.text = r.text; ui.output.textContent = status.text; }
    status.gpuDispatches = r.work.gpuDispatches;
    status.cpuKernelCalls = r.work.cpuKernelCalls;
    status.prefillMs = r.timings.prefillMs;
    status.tokensPerSecond = r.timings.decodeMsPerToken > 0 ? 1000 / r.timings.decodeMsPerToken : null;
    const context = Math.min(info.contextLength, spec.ids.length + spec.maxTokens);
    const kv = r.kv, full = kv.fullAttention;
    const sampled = meanSampledFraction(kv);
    status.kv = { gpu: kv.gpu, cpu: kv.cpu, full, offloaded: kv.offloaded, sampled };
    set('stat-prefill', `${r.timings.prefillMs.toFixed(1)} ms (${(spec.ids.length / (r.timings.prefillMs / 1000)).toFixed(0)} tokens/s)`);
    set('stat-tokens', `${r.tokens.length} (${r.stoppedBy === 'eos' ? 'stopped at end-of-sequence' : r.stoppedBy === 'max_tokens' ? 'token limit' : 'context limit'})`);
    set('stat-tps', status.tokensPerSecond ? `${status.tokensPerSecond.toFixed(1)} tokens/s (${r.timings.decodeMsPerToken.toFixed(1)} ms/token)` : '–');
    set('kv-gpu', formatBytes(kv.gpu));
    set('kv-cpu', formatBytes(kv.cpu));
    const total = kv.retrieval + kv.streaming;
    set('kv-total', formatBytes(total));
    set('kv-full', `${formatBytes(full)} (${context} tokens, f32)`);
    set('kv-offloaded', kv.offloaded ? formatBytes(kv.offloaded) : 'none');
    set('kv-sampled', sampled === null ? '–' : `${(100 * sampled).toFixed(1)}% (mean over the decode steps)`);
    set('kv-saving', total <= 0 ? '–' : full >= total ? `${(full / total).toFixed(2)}× less`
      : 'none yet: the context is shorter than the streaming window');
    set('work-gpu', `${status.gpuDispatches}`);
    set('work-cpu', `${status.cpuKernelCalls}`);
    if (spec.passkey !== undefined) {
      const found = score('passkey', status.text, [spec.passkey]) === 1;
      status.passkey = { expected: spec.passkey, found };
      ui.passkeyResult.hidden = false;
      ui.passkeyResult.innerHTML = '';
      const verdict = document.createElement('span');
      verdict.className = found ? 'ok' : 'bad';
      verdict.textContent = found ? 'recalled ✓' : 'not recalled ✗';
      ui.passkeyResult.append(`The hidden pass key was ${spec.passkey}: `, verdict);
    }
    setStatus('done', `Done: ${r.tokens.length} tokens in ${r.timings.totalMs.toFixed(0)} ms.`);
  } catch (err) {
    showError(err);
    setStatus('error', 'The run failed (see the message below).');
  } finally {
    setBusy(false);
  }
}

function promptIds(text: string): number[] {
  const model = loaded!.model;
  if (model.tokenizer) return model.encode(text);
  const vocab = model.info.config.vocabSize;
  return text.split(',').map((s) => {
    const n = Number(s.trim());
    if (s.trim() === '' || !Number.isInteger(n) || n < 0 || n >= vocab) {
      throw new Error(`This model has no tokenizer: the prompt must be token ids like 1,2,3 ("${s.trim()}" is not an id in 0..${vocab - 1})`);
    }
    return n;
  });
}

function generatePrompt(): RunSpec {
  const text = ui.prompt.value;
  if (text.trim() === '') throw new Error('The prompt is empty: type some text first.');
  ui.promptDetails.hidden = true;
  return { ids: promptIds(text), maxTokens: numberInput(ui.maxTokens, 'New tokens', 1, 4096, true), label: 'your prompt' };
}

function passkeyPrompt(): RunSpec {
  const model = loaded!.model;
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new Error('The passkey test needs a tokenizer (tokenizer.json in the model folder).');
  const length = numberInput(ui.passkeyLength, 'Prompt length', 64, model.info.config.maxPositionEmbeddings - 16, true);
  const depth = numberInput(ui.passkeyDepth, 'Needle depth', 0, 1, false);
  // ?seed=N makes the passkey prompt reproducible (the browser test uses it); otherwise a new one each time.
  const seed = params.has('seed') ? Number(params.get('seed')) : Math.floor(Math.random() * 2 ** 31);
  if (!Number.isInteger(seed)) throw new Error(`The page's ?seed= must be an integer (got "${params.get('seed')}").`);
  const { sample, ids } = taskPrompt(tokenizer, { kind: 'passkey', length, depth, seed, style: fillerStyleFor(tokenizer) });
  ui.promptShown.textContent = sample.prompt;
  ui.promptDetails.hidden = false;
  return {
    ids, maxTokens: sample.maxNewTokens,
    label: `passkey at depth ${depth}`, passkey: sample.answers[0],
  };
}

// ---------- wiring ----------

/** Settings changes: a bad value shows its error in the page (runs refuse to start until it is fixed). */
async function withErrors(action: () => Promise<void>): Promise<void> {
  clearError();
  try { await action(); } catch (e) { showError(e); }
}

ui.generate.addEventListener('click', () => { void run(generatePrompt); });
ui.passkey.addEventListener('click', () => { void run(passkeyPrompt); });
ui.modelServed.addEventListener('change', () => {
  if (ui.modelServed.checked && served) void openModel(httpModelFiles(new URL(served.model.url, location.href).toString()), served.model.name);
});
ui.modelFolderChoice.addEventListener('change', () => { if (ui.modelFolderChoice.checked) ui.modelFolder.click(); });
ui.modelFolder.addEventListener('change', () => {
  const files = ui.modelFolder.files;
  if (!files || files.length === 0) return;
  ui.modelFolderChoice.checked = true;
  const picked = pickedModelFiles(files);
  void openModel(picked, `folder "${picked.name}"`);
});
ui.patternSource.addEventListener('change', () => {
  if (ui.patternSource.value === 'upload') { ui.patternFiles.hidden = false; ui.patternFiles.click(); }
  void withErrors(refreshPattern);
});
ui.patternFiles.addEventListener('change', () => { void withErrors(refreshPattern); });
ui.sparsity.addEventListener('input', () => {
  void withErrors(async () => { if (loaded && !patternError) drawHeads(); });
});

async function start(): Promise<void> {
  setBusy(true);
  void describeEnvironment();
  try {
    const r = await fetch('served.json');
    if (r.ok) served = (await r.json()) as Served;
  } catch { /* opened without `duet web`: only picked folders work */ }
  if (served) {
    ui.servedModelName.textContent = served.model.name;
    if (served.pattern) ui.patternServedOption.textContent = `The pattern this server provides: ${served.pattern.name}`;
    else { ui.patternServedOption.remove(); ui.patternSource.value = 'none'; }
    ui.modelServed.disabled = false;
    await openModel(httpModelFiles(new URL(served.model.url, location.href).toString()), served.model.name);
  } else {
    ui.servedModelName.textContent = 'none (this page was not opened through `duet web`)';
    ui.patternServedOption.remove();
    ui.patternSource.value = 'none';
    ui.modelFolderChoice.checked = true;
    setBusy(false);
    setStatus('ready', 'Pick a model folder to start.');
  }
}

void start();
