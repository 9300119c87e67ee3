// A Llama-3.2-1B-shaped model (the real config, seeded random weights) in the demo page, CPU only:
// writes one GGUF per weight format (cached), serves it with `duet web`, and runs the page's passkey
// test at a long context in Debian's headless Chromium (the CPU worker's WebAssembly memory holds the
// packed weights and the KV cache). Records what the page reports, plus Chromium's resident memory,
// in OUT/results.json. A measurement, not a test (minutes per format on 2 cores).
//
//   node --import tsx scripts/browser-big-model.ts [--formats q4_0,q8_0] [--context 8192]
//        [--sparsity 0|0.5] [--out docs/bench/browser-1b] [--cache /tmp/duet-big-model]
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium, type Page } from 'playwright-core';
import { formatAlphas } from '../src/attention/pattern.ts';
import { randomAlphas, randomWeights } from '../src/bench/random-weights.ts';
import { benchShape } from '../src/bench/shapes.ts';
import { encodeMatrix } from '../src/model/gguf-encode.ts';
import { ggufChunks } from '../src/model/gguf-write.ts';
import { isWeightDType, type WeightDType } from '../src/model/quant.ts';
import { writeChunksAtomic } from '../src/node/atomic.ts';
import { syntheticTokenizer } from '../src/node/bench-peers.ts';
import type { DuetStatus } from '../web/main.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const SHAPE = 'llama-3.2-1b';
const WINDOW = { sink_size: 64, recent_size: 256 };
const CHROMIUM_ARGS = [
  '--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader',
  '--disable-gpu-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

const { values: v } = parseArgs({
  options: {
    formats: { type: 'string', default: 'q4_0,q8_0' }, context: { type: 'string', default: '8192' },
    sparsity: { type: 'string', default: '0' }, out: { type: 'string', default: 'docs/bench/browser-1b' },
    cache: { type: 'string', default: join(tmpdir(), 'duet-big-model') },
  },
});
const formats = v.formats!.split(',');
for (const f of formats) if (!isWeightDType(f)) throw new Error(`--formats: "${f}" is not a weight format`);
const context = Number(v.context), sparsity = Number(v.sparsity);
if (!(Number.isInteger(context) && context >= 64)) throw new Error(`--context must be an integer ≥ 64 (got ${v.context})`);
if (!(sparsity >= 0 && sparsity < 1)) throw new Error(`--sparsity must be in [0, 1) (got ${v.sparsity})`);

const log = (m: string) => process.stdout.write(`browser-big-model: ${m}\n`);
const config = benchShape(SHAPE, { layers: 16, positions: context + 64, chunk: 512, weights: 'q4_0' }).config;
mkdirSync(v.cache!, { recursive: true });

/** The GGUF of one format, written once (atomically) and reused. */
async function ggufFor(format: WeightDType): Promise<string> {
  const file = join(v.cache!, `${SHAPE}-random-${format}.gguf`);
  if (existsSync(file)) return file;
  log(`${format}: drawing random weights and writing ${file}`);
  const weights = randomWeights(config, 1, (d, t) => { if (d === t || d % 4 === 0) log(`${format}: layer ${d}/${t}`); }, format);
  await writeChunksAtomic(file, ggufChunks(config, weights, { name: `${SHAPE} random`, type: format, encode: encodeMatrix, tokenizer: syntheticTokenizer(config.vocabSize) }));
  return file;
}

function patternDir(): string {
  const dir = join(v.cache!, 'pattern');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'full_attention_heads.tsv'), formatAlphas(randomAlphas(config.numLayers, config.numKvHeads, 7)));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(WINDOW));
  return dir;
}

async function serve(model: string, pattern: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/duet.mjs'), 'web', '--port', '0', '--model', model, '--pattern', pattern],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const url = await new Promise<string>((ok, fail) => {
    const onData = (d: Buffer) => { output += d; const m = /serving (http:\/\/127\.0\.0\.1:\d+\/)/.exec(output); if (m) ok(m[1]); };
    child.stdout!.on('data', onData); child.stderr!.on('data', onData);
    child.once('exit', (code) => fail(new Error(`duet web exited (${code}):\n${output}`)));
  });
  return { url, child };
}

/** Resident bytes of every Chromium process (the renderer and its workers hold the model). */
function chromiumRss(): number {
  const out = execFileSync('ps', ['-C', 'chromium', '-o', 'rss='], { encoding: 'utf8' });
  return out.split('\n').filter(Boolean).reduce((a, l) => a + Number(l.trim()) * 1024, 0);
}

async function status(page: Page): Promise<DuetStatus> {
  return page.evaluate(() => JSON.parse(JSON.stringify(window.duet)) as DuetStatus);
}

async function runFormat(format: WeightDType, pattern: string): Promise<Record<string, unknown>> {
  const file = await ggufFor(format);
  const { url, child } = await serve(file, pattern);
  const profile = mkdtempSync(join(tmpdir(), 'duet-chromium-'));
  const context0 = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await context0.newPage();
    page.on('console', (m) => { if (m.type() === 'error') log(`page console: ${m.text()}`); });
    const t0 = performance.now();
    await page.goto(`${url}?seed=3`);
    await page.waitForFunction(() => ['ready', 'error'].includes(window.duet?.state), null, { timeout: 1_800_000, polling: 1000 });
    let s = await status(page);
    if (s.state !== 'ready') throw new Error(`${format}: the page did not get ready: ${s.error}`);
    const loadMs = performance.now() - t0;
    log(`${format}: page ready in ${(loadMs / 1000).toFixed(1)} s; ${await page.textContent('#model-info')}`);
    await page.selectOption('#placement', 'cpu');
    await page.selectOption('#device', 'cpu');
    await page.selectOption('#pattern-source', sparsity > 0 ? 'served' : 'none');
    if (sparsity > 0) await page.fill('#sparsity', String(sparsity));
    await page.fill('#passkey-length', String(context));
    const t1 = performance.now();
    await page.click('#passkey');
    let rssPeak = 0;
    for (;;) {
      rssPeak = Math.max(rssPeak, chromiumRss());
      s = await status(page);
      if (s.state === 'done' || s.state === 'error') break;
      await new Promise((r) => setTimeout(r, 5000));
    }
    const runMs = performance.now() - t1;
    const device = await page.textContent('#stat-device');
    const info = await page.textContent('#model-info');
    log(`${format}: ${s.state}${s.error ? ` (${s.error})` : ''}; prefill ${s.prefillMs?.toFixed(0)} ms, ${s.tokensPerSecond?.toFixed(2)} tok/s, KV ${JSON.stringify(s.kv)}, Chromium RSS peak ${(rssPeak / 2 ** 30).toFixed(2)} GiB; ${device}`);
    return {
      format, context, sparsity, state: s.state, error: s.error, model_info: info, device, placement: s.placement,
      load_s: loadMs / 1000, run_s: runMs / 1000, prefill_ms: s.prefillMs, decode_tokens_per_s: s.tokensPerSecond, tokens: s.tokens,
      kv_bytes: s.kv, chromium_rss_peak_bytes: rssPeak, notices: s.notices,
    };
  } finally {
    await context0.close();
    child.kill();
    rmSync(profile, { recursive: true, force: true });
  }
}

const pattern = patternDir();
const rows: Array<Record<string, unknown>> = [];
for (const f of formats) rows.push(await runFormat(f as WeightDType, pattern));
mkdirSync(resolve(v.out!), { recursive: true });
const out = join(resolve(v.out!), 'results.json');
await writeChunksAtomic(out, [new TextEncoder().encode(JSON.stringify({
  shape: SHAPE, config: { layers: config.numLayers, hidden: config.hiddenSize, heads: config.numHeads, kv_heads: config.numKvHeads, vocab: config.vocabSize },
  command: `node --import tsx scripts/browser-big-model.ts ${process.argv.slice(2).join(' ')}`.trim(),
  date: new Date().toISOString(), chromium: execFileSync('/usr/bin/chromium', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(), rows,
}, null, 2) + '\n')], { force: true });
log(`wrote ${out}`);
