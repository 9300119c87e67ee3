// `duet web` serving one .gguf file: the page learns its URL from served.json, ranges work, and
// nothing else in the file's folder is served (the folder-model case is fuzzed in fuzz.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWebServer } from '../src/cli/web.ts';

test('duet web --model FILE.gguf serves that file alone, by range, and names it in served.json', async () => {
  const base = mkdtempSync(join(tmpdir(), 'duet-web-gguf-'));
  const bytes = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
  writeFileSync(join(base, 'my model.gguf'), bytes);
  writeFileSync(join(base, 'secret.txt'), 'SECRET');
  writeFileSync(join(base, 'config.json'), '{}');
  mkdirSync(join(base, 'page'));
  writeFileSync(join(base, 'page/index.html'), '<!doctype html>page');
  // Served through a symlink elsewhere: the link's target is what is served.
  const links = mkdtempSync(join(tmpdir(), 'duet-web-gguf-link-'));
  symlinkSync(join(base, 'my model.gguf'), join(links, 'linked.gguf'));
  for (const model of [join(base, 'my model.gguf'), join(links, 'linked.gguf')]) {
    const server = await startWebServer({ port: 0, model, pattern: null, root: join(base, 'page') });
    try {
      const info = await (await fetch(new URL('served.json', server.url))).json() as { model: { name: string; url: string } };
      assert.is(info.model.url, 'model/my%20model.gguf');
      const ranged = await fetch(new URL(info.model.url, server.url), { headers: { Range: 'bytes=10-19' } });
      assert.is(ranged.status, 206);
      assert.equal([...new Uint8Array(await ranged.arrayBuffer())], [...bytes.subarray(10, 20)]);
      const whole = await fetch(new URL(info.model.url, server.url));
      assert.is(whole.status, 200);
      assert.is((await whole.arrayBuffer()).byteLength, 1000);
      for (const other of ['model/secret.txt', 'model/config.json', 'model/', 'model/..%2fsecret.txt']) {
        const r = await fetch(new URL(other, server.url));
        assert.is(r.status, 404, other);
        assert.not.match(await r.text(), /SECRET/);
      }
    } finally {
      await server.close();
    }
  }
  rmSync(base, { recursive: true, force: true });
  rmSync(links, { recursive: true, force: true });
});

test.run();
