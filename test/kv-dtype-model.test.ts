// The bundled model with f16 and int8 full KV caches on the CPU: it still recalls the pass key at
// 1,024 tokens, and the KV bytes the generation reports are exactly the dtype's rows (the memory
// plan's, and `duet memory`'s projection, at the same context). The GPU runs the same in
// gpu-kv-dtype.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadModel } from '../src/node.ts';
import type { KvDType } from '../src/backend/kv-dtype.ts';
import { BUNDLED, checkBundledKv } from './helpers/kv-dtype-model.ts';

for (const kvDtype of ['f16', 'int8'] as const) {
  test(`bundled model on the CPU with ${kvDtype} full KV caches: passkey at 1,024 tokens, exact KV bytes`, async () => {
    await checkBundledKv(kvDtype, { device: 'cpu', threads: 1 }, 'cpu');
  });
}

test('a bad kvDtype is refused before loading, naming the option', async () => {
  const error = await loadModel(BUNDLED, { device: 'cpu', kvDtype: 'q4_0' as KvDType }).then(() => null, (e: Error & { field?: string }) => e);
  assert.is(error?.field, 'kvDtype');
  assert.match(String(error?.message), /kvDtype must be one of f32, f16, int8 \(got "q4_0"\)/);
});

test.run();
