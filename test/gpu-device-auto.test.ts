// Device choice with only a software GPU (SwiftShader or llvmpipe, as in CI): 'auto' runs on the CPU
// and says why, 'gpu' still uses the software adapter, and a GPUDevice the caller lends is used and
// left alive. Also the CLI's --device auto notice.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { loadModel } from '../src/node.ts';
import { createNodeGpu } from '../src/node/gpu.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const MODEL = join(ROOT, 'fixtures/duet-passkey');
const PATTERN = join(ROOT, 'fixtures/duet-passkey-pattern');
const probe = await createNodeGpu();
if (!probe.gpu && process.env.CI) throw new Error(`CI must have a (software) GPU adapter: ${probe.reason}`);
if (!probe.gpu) console.warn(`[skip] no WebGPU adapter: ${probe.reason}`);
const software = probe.gpu?.software ?? false;
if (probe.gpu && !software) console.warn(`[skip] ${probe.gpu.adapterDescription} is a hardware adapter: the software-only cases do not apply`);

const common = { pattern: PATTERN, sparsity: 0.5, threads: 1 } as const;

if (software) test("device 'auto' with only a software adapter runs on the CPU and says why", async () => {
  const notices: string[] = [];
  const m = await loadModel(MODEL, { ...common, device: 'auto', notice: (n) => notices.push(n) });
  try {
    assert.is(m.info.placement, 'cpu');
    assert.match(m.info.device, /^cpu: /);
    assert.ok(notices.some((n) => /the only WebGPU adapter is a software renderer/.test(n) && /running on the CPU/.test(n)), JSON.stringify(notices));
    const r = await m.generate('the pass key is', { maxTokens: 4 }).result();
    assert.is(r.work.gpuDispatches, 0);
    assert.ok(r.work.cpuKernelCalls > 0);
  } finally { await m.dispose(); }
});

if (software) test("device 'gpu' still uses the software adapter (split placement: work on both devices)", async () => {
  const m = await loadModel(MODEL, { ...common, device: 'gpu' });
  try {
    assert.is(m.info.placement, 'split');
    const r = await m.generate('the pass key is', { maxTokens: 4 }).result();
    assert.ok(r.work.gpuDispatches > 0 && r.work.cpuKernelCalls > 0, JSON.stringify(r.work));
    assert.ok(r.kv.gpu > 0 && r.kv.cpu > 0);
  } finally { await m.dispose(); }
});

if (probe.gpu) test('a GPUDevice given by the caller is used, and still alive after dispose()', async () => {
  const lent = probe.gpu!.device;
  const m = await loadModel(MODEL, { ...common, gpuDevice: lent, placement: 'gpu' });
  assert.is(m.info.placement, 'gpu');
  assert.match(m.info.device, /the GPUDevice given by the caller/);
  const r = await m.generate('the pass key is', { maxTokens: 3 }).result();
  assert.ok(r.work.gpuDispatches > 0);
  await m.dispose();
  // The device was not destroyed: it still runs work.
  const buffer = lent.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  await buffer.mapAsync(GPUMapMode.READ);
  assert.is(new Uint8Array(buffer.getMappedRange()).length, 16);
  buffer.destroy();
});

if (software) test('duet generate --device auto prints the software-adapter notice and runs on the CPU', async () => {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(ROOT, 'bin/duet.mjs'), 'generate', '--model', MODEL,
    '--pattern', PATTERN, '--sparsity', '0.5', '--prompt', 'the pass key is', '--max-tokens', '4', '--threads', '1', '--json'], { cwd: ROOT });
  assert.match(stderr, /duet: the only WebGPU adapter is a software renderer \(.+\); running on the CPU/);
  assert.is(JSON.parse(stdout).placement, 'cpu');
});

test.after(() => { probe.gpu?.destroy(); });

test.run();
