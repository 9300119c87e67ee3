// The package as shipped: `npm pack`, install the tarball into a fresh project without dev or
// optional dependencies (so no `webgpu`), then
//  - Node: import 'duet', load the bundled model from the installed package and generate (on the
//    CPU, saying that Dawn is missing), and type-check a consumer file against the shipped .d.ts;
//  - browser: bundle a tiny page against the installed package with esbuild (platform browser),
//    run it in headless Chromium (SwiftShader WebGPU, so 'auto' must choose the CPU), generate,
//    and load again to see the model come from the Cache API.
// Run with `npm run test:browser` (after the build). Uses the npm cache (no network needed after npm ci).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';

const ROOT = new URL('../..', import.meta.url).pathname;
const CHROMIUM = process.env.DUET_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader',
  '--disable-gpu-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const PROMPT = 'what is the pass key?';

function log(m: string): void { process.stdout.write(`consumer: ${m}\n`); }

const work = mkdtempSync(join(tmpdir(), 'duet-consumer-'));
const app = join(work, 'app');

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function main(): Promise<void> {
  // 1. Pack and install (no dev deps, no optional deps: webgpu stays out).
  const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', work], ROOT))[0];
  log(`packed ${packed.filename}: ${packed.files.length} files, ${packed.size} bytes`);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'duet-consumer', private: true, type: 'module' }));
  npm(['install', join(work, packed.filename), '--omit=dev', '--omit=optional', '--prefer-offline', '--no-audit', '--no-fund'], app);
  const installed = join(app, 'node_modules/duet');
  assert.ok(!existsSync(join(app, 'node_modules/webgpu')), 'webgpu was installed although optional dependencies were omitted');
  assert.ok(!existsSync(join(app, 'node_modules/openai')) && !existsSync(join(app, 'node_modules/esbuild')), 'dev dependencies were installed');
  assert.ok(!existsSync(join(installed, 'src')) && !existsSync(join(installed, 'test')), 'sources or tests were shipped');

  // A q8_0 GGUF of the bundled model (its ffn_down rows fall back to f16), written by the installed CLI.
  const gguf = join(work, 'gguf');
  mkdirSync(gguf);
  execFileSync(process.execPath, [join(installed, 'bin/duet.mjs'), 'quantize', '--model', join(installed, 'fixtures/duet-passkey'), '--type', 'q8_0',
    '--out', join(gguf, 'duet-passkey-q8_0.gguf')], { stdio: 'ignore' });

  // 2. Node: import the package by name and generate on the CPU.
  writeFileSync(join(app, 'run.mjs'), `
import { loadModel, DuetError } from 'duet';
const notices = [];
const model = await loadModel('node_modules/duet/fixtures/duet-passkey', {
  pattern: 'node_modules/duet/fixtures/duet-passkey-pattern', sparsity: 0.5, threads: 1, notice: (m) => notices.push(m),
});
let text = '';
for await (const d of model.generate(${JSON.stringify(PROMPT)}, { maxTokens: 40 })) text += d.text;
const result = await model.generate(${JSON.stringify(PROMPT)}, { maxTokens: 40 }).result();
let error = null;
try { model.generate('x', { maxTokens: -1 }); } catch (e) { error = { isDuetError: e instanceof DuetError, field: e.field }; }
await model.dispose();
const q8 = await loadModel('node_modules/duet/fixtures/duet-passkey', {
  pattern: 'node_modules/duet/fixtures/duet-passkey-pattern', sparsity: 0.5, device: 'cpu', weights: 'q8_0', threads: 1,
});
const q8Text = (await q8.generate(${JSON.stringify(PROMPT)}, { maxTokens: 40 }).result()).text;
await q8.dispose();
const g = await loadModel(${JSON.stringify(join(gguf, 'duet-passkey-q8_0.gguf'))}, {
  pattern: 'node_modules/duet/fixtures/duet-passkey-pattern', sparsity: 0.5, device: 'cpu', threads: 1,
});
const ggufText = (await g.generate(${JSON.stringify(PROMPT)}, { maxTokens: 40 }).result()).text;
await g.dispose();
console.log(JSON.stringify({ text, q8Text, ggufText, result: { text: result.text, finishReason: result.finishReason, kv: result.kv }, placement: model.info.placement, notices, error }));
`);
  const node = JSON.parse(execFileSync(process.execPath, ['run.mjs'], { cwd: app, encoding: 'utf8' }));
  log(`node: ${JSON.stringify(node)}`);
  assert.equal(node.placement, 'cpu');
  assert.ok(node.notices.some((n: string) => /optional 'webgpu' package \(Dawn\) is not installed/.test(n)), JSON.stringify(node.notices));
  assert.match(node.text, /pass key is \d+/);
  assert.equal(node.result.text, node.text);
  assert.equal(node.result.finishReason, 'stop');
  assert.ok(node.result.kv.cpu > 0 && node.result.kv.streaming > 0);
  assert.deepEqual(node.error, { isDuetError: true, field: 'maxTokens' });
  assert.match(node.q8Text, /pass key is \d+/);

  // 3. Types: a consumer file checked against the shipped declarations (the @ts-expect-error lines
  //    fail the check if the types were missing or `any`).
  writeFileSync(join(app, 'check.ts'), `
import { loadModel, type GenerationStats, type ChatCompletionChunk } from 'duet';
const model = await loadModel('m', { sparsity: 0.5, device: 'cpu' });
// @ts-expect-error maxTokens is a number
model.generate('x', { maxTokens: 'many' });
// @ts-expect-error no such device
await loadModel('m', { device: 'tpu' });
const stats: GenerationStats = await model.generate('x').result();
const n: number = stats.kv.fullAttention;
for await (const c of await model.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], stream: true })) {
  const chunk: ChatCompletionChunk = c;
  void chunk.choices[0]?.delta.content;
}
void n;
`);
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, types: [], lib: ['ES2022', 'DOM'] }, files: ['check.ts'] }));
  execFileSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: app, stdio: 'inherit' });
  log('types: check.ts type-checks against dist/types');

  // 4. Browser: bundle a page against the installed package.
  writeFileSync(join(app, 'page.ts'), `
import { loadModel, cachedModelFiles } from 'duet';
async function run() {
  const notices: string[] = [];
  // The last progress event of each (step, file): downloads and weights report done === total at the end.
  const progress: Record<string, { done: number; total: number }> = {};
  const query = new URLSearchParams(location.search);
  // ?gguf=1: the q8_0 GGUF file by its URL (one file, cached like a folder).
  const files = cachedModelFiles(new URL(query.has('gguf') ? 'gguf/duet-passkey-q8_0.gguf' : 'model/', location.href).toString(),
    { onProgress: (done, total, file) => { progress['download ' + file] = { done, total }; } });
  // ?weights=q8_0: packed weights, in the CPU worker (cpu-worker.js serves 'duet/worker').
  const weights = query.get('weights') ?? undefined;
  const worker = weights || query.has('gguf') ? { ...(weights ? { weights: weights as 'q8_0' } : {}), cpuWorker: () => new Worker(new URL('cpu-worker.js', location.href), { type: 'module' }) } : {};
  const model = await loadModel(files, { pattern: new URL('pattern/', location.href).toString(), sparsity: 0.5, notice: (m) => notices.push(m), onProgress: (e) => { progress[e.step + ' ' + (e.detail ?? '')] = { done: e.done, total: e.total }; }, ...worker });
  let text = '';
  for await (const d of model.generate(${JSON.stringify(PROMPT)}, { maxTokens: 40 })) text += d.text;
  const chat = await model.chat.completions.create({ messages: [{ role: 'user', content: ${JSON.stringify(PROMPT)} }], temperature: 0, max_tokens: 40 });
  const { model: info, last } = model.stats();
  await model.dispose();
  return { text, chat: chat.choices[0].message.content, placement: info.placement, cpu: info.cpu, weights: info.weights, notices, progress, counters: files.counters, cpuKernelCalls: last!.work.cpuKernelCalls };
}
(window as unknown as { result: Promise<unknown> }).result = run().catch((e) => ({ error: String(e && e.stack || e) }));
`);
  writeFileSync(join(app, 'cpu-worker.ts'), "import { serveCpuBackend } from 'duet/worker';\nserveCpuBackend();\n");
  writeFileSync(join(app, 'index.html'), '<!doctype html><meta charset="utf-8"><title>duet consumer</title><script type="module" src="page.js"></script>');
  const esbuild = await import('esbuild');
  const built = await esbuild.build({
    entryPoints: [join(app, 'page.ts'), join(app, 'cpu-worker.ts')], outdir: app, absWorkingDir: app,
    bundle: true, platform: 'browser', format: 'esm', target: 'chrome113', metafile: true, logLevel: 'warning',
  });
  const inputs = Object.keys(built.metafile.inputs);
  assert.ok(inputs.some((i) => i.includes('node_modules/duet/dist/index.js')), `the page did not bundle the package's browser entry: ${inputs.join(', ')}`);
  assert.ok(!inputs.some((i) => /webgpu|node:|dist\/node\.js/.test(i)), `Node-only code in the browser bundle: ${inputs.join(', ')}`);

  // A static server: the page, the installed package's bundled model under model/ and its pattern under pattern/.
  const roots: Array<[string, string]> = [['/gguf/', gguf], ['/model/', join(installed, 'fixtures/duet-passkey')], ['/pattern/', join(installed, 'fixtures/duet-passkey-pattern')], ['/', app]];
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push(`${req.method} ${path}`);
    const [prefix, dir] = roots.find(([p]) => path.startsWith(p))!;
    const file = normalize(join(dir, path.slice(prefix.length) || 'index.html'));
    if (!file.startsWith(dir) || !existsSync(file) || !statSync(file).isFile()) { res.writeHead(404).end(); return; }
    const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json' };
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'content-length': statSync(file).size });
    if (req.method === 'HEAD') res.end(); else createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const profile = mkdtempSync(join(tmpdir(), 'duet-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const problems: string[] = [];
    const open = async (query = '') => {
      const page = await context.newPage();
      page.on('pageerror', (e) => problems.push(e.message));
      await page.goto(url + query);
      const r = await page.evaluate(() => (window as unknown as { result: Promise<unknown> }).result) as Record<string, any>;
      await page.close();
      assert.ok(!r.error, `the page failed: ${r.error}`);
      return r;
    };
    const first = await open();
    log(`browser, first load: ${JSON.stringify({ ...first, progress: `${Object.keys(first.progress).length} (step, file) pairs` })}`);
    assert.equal(first.text, node.text, 'the page generated other text than Node (both greedy on the WebAssembly CPU)');
    assert.equal(first.chat, node.text);
    assert.equal(first.placement, 'cpu');
    assert.ok(first.cpuKernelCalls > 0);
    assert.ok(first.notices.some((n: string) => /software renderer/.test(n)), `device 'auto' did not refuse SwiftShader: ${JSON.stringify(first.notices)}`);
    assert.ok(first.counters.downloaded.includes('model.safetensors'), JSON.stringify(first.counters));
    // Progress: a download event ends at its total for the weights, and the weights step reaches its total.
    const steps = Object.entries(first.progress as Record<string, { done: number; total: number }>);
    const download = steps.find(([k]) => k.startsWith('download') && k.includes('model.safetensors'));
    assert.ok(download && download[1].total > 0 && download[1].done === download[1].total, `no finished download progress for model.safetensors: ${JSON.stringify(first.progress)}`);
    assert.ok(steps.some(([k, e]) => k.startsWith('weights') && e.total > 0 && e.done === e.total), `no finished weights progress: ${JSON.stringify(first.progress)}`);
    const before = requests.filter((r) => r.endsWith('model.safetensors')).length;
    const second = await open();
    log(`browser, second load: ${JSON.stringify(second.counters)}`);
    assert.equal(second.text, node.text);
    assert.ok(second.counters.fromCache.includes('model.safetensors') && second.counters.downloaded.length === 0, JSON.stringify(second.counters));
    assert.equal(requests.filter((r) => r.endsWith('model.safetensors')).length, before, 'the second load fetched the weights again');
    // q8_0 weights in the CPU worker: packed bytes transferred and uploaded there; same text as Node at q8_0.
    const q8 = await open('?weights=q8_0');
    log(`browser, q8_0 in the CPU worker: ${JSON.stringify({ text: q8.text, cpu: q8.cpu, weights: q8.weights })}`);
    assert.equal(q8.weights.dtype, 'q8_0');
    assert.match(q8.cpu, /in a Web Worker/);
    assert.equal(q8.text, node.q8Text, 'the CPU worker at q8_0 generated other text than Node at q8_0');
    // The GGUF by URL: its own types (q8_0 with f16 fallbacks) in the CPU worker, Node's text for the same file.
    const fromGguf = await open('?gguf=1');
    log(`browser, GGUF in the CPU worker: ${JSON.stringify({ text: fromGguf.text, weights: fromGguf.weights, counters: fromGguf.counters })}`);
    assert.equal(fromGguf.weights.dtype, 'q8_0');
    assert.deepEqual(fromGguf.counters.downloaded, ['duet-passkey-q8_0.gguf']);
    assert.equal(fromGguf.text, node.ggufText, 'the page generated other text from the GGUF than Node');
    assert.deepEqual(problems, []);
    log('ok');
  } finally {
    await context.close().catch(() => {});
    server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => { rmSync(work, { recursive: true, force: true }); process.exit(0); }, (e: unknown) => {
  process.stderr.write(`consumer: FAILED: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n(left ${work}: ${readdirSync(work).join(', ')})\n`);
  process.exit(1);
});
