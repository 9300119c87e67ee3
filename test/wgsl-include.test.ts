// The build's WGSL include mechanism (scripts/wgsl-include.mjs): expansion in place, nested and
// include-once (diamond) includes, and errors for a missing file, a cycle and a malformed directive.
// Also: every shader in wgsl/ expands, and nothing under wgsl/lib/ is emitted as a shader.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expandIncludes, shaderFiles } from '../scripts/wgsl-include.mjs';
import { shaders } from '../src/generated/shaders.ts';

const files = (m: Record<string, string>) => (path: string): string | null => m[path] ?? null;

test('an include is replaced by the file, nested includes expand, each file once per shader', () => {
  const fs = files({
    'main.wgsl': 'a\n#include "lib/x.wgsl"\n  #include "lib/y.wgsl"\nz',
    'lib/x.wgsl': 'fn x() {}\n#include "lib/base.wgsl"\n',
    'lib/y.wgsl': '#include "lib/base.wgsl"\nfn y() {}',
    'lib/base.wgsl': 'const B = 1u;\n',
  });
  assert.is(expandIncludes('main.wgsl', fs), 'a\nfn x() {}\nconst B = 1u;\n// (lib/base.wgsl already included)\nfn y() {}\nz');
  assert.is(expandIncludes('lib/base.wgsl', fs), 'const B = 1u;\n');
});

test('a missing include, a cycle and a malformed directive are errors naming the files', () => {
  assert.throws(() => expandIncludes('m.wgsl', files({ 'm.wgsl': '#include "lib/nope.wgsl"' })),
    /WGSL include "lib\/nope\.wgsl" not found \(included from m\.wgsl\)/);
  assert.throws(() => expandIncludes('gone.wgsl', files({})), /WGSL shader "gone\.wgsl" not found/);
  const cyc = files({ 'm.wgsl': '#include "lib/a.wgsl"', 'lib/a.wgsl': '#include "lib/b.wgsl"', 'lib/b.wgsl': '#include "lib/a.wgsl"' });
  assert.throws(() => expandIncludes('m.wgsl', cyc), /WGSL include cycle: m\.wgsl -> lib\/a\.wgsl -> lib\/b\.wgsl -> lib\/a\.wgsl/);
  assert.throws(() => expandIncludes('s.wgsl', files({ 's.wgsl': '#include "lib/s.wgsl"', 'lib/s.wgsl': '#include "lib/s.wgsl"' })), /cycle: s\.wgsl -> lib\/s\.wgsl -> lib\/s\.wgsl/);
  assert.throws(() => expandIncludes('m.wgsl', files({ 'm.wgsl': 'x\n#include lib/a.wgsl' })), /m\.wgsl:2: malformed directive/);
});

test('the built shaders are wgsl/*.wgsl and src/kv/METHOD/*.wgsl with includes expanded; wgsl/lib/ pieces are not shaders', () => {
  const root = new URL('..', import.meta.url);
  const dir = new URL('wgsl/', root);
  const found = shaderFiles(root.pathname);
  const top = readdirSync(dir).filter((f) => f.endsWith('.wgsl')).map((f) => `wgsl/${f}`);
  const methods = readdirSync(new URL('src/kv/', root), { withFileTypes: true }).filter((e) => e.isDirectory())
    .flatMap((e) => readdirSync(new URL(`src/kv/${e.name}/`, root)).filter((f) => f.endsWith('.wgsl')).map((f) => `src/kv/${e.name}/${f}`));
  assert.equal(found.map((f) => f.path).sort(), [...top, ...methods].sort());
  assert.ok(methods.includes('src/kv/streaming/streaming_attention.wgsl'), 'a method folder holds its shaders');
  assert.equal(Object.keys(shaders).sort(), found.map((f) => f.name).sort());
  const read = (p: string) => { try { return readFileSync(new URL(p.startsWith('lib/') ? `wgsl/${p}` : p, root), 'utf8'); } catch { return null; } };
  for (const { name, path } of found) {
    assert.is(shaders[name], expandIncludes(path, read), `${name} is stale: run npm run build`);
    assert.not.match(shaders[name], /#include/);
  }
  assert.ok(readdirSync(new URL('lib/', dir)).length > 0, 'wgsl/lib/ has the shared pieces');
});

test('two shaders of one name (wgsl/ and a method folder) are refused, naming both files', () => {
  const root = mkdtempSync(join(tmpdir(), 'duet-wgsl-'));
  try {
    mkdirSync(join(root, 'wgsl')); mkdirSync(join(root, 'src/kv/m'), { recursive: true });
    writeFileSync(join(root, 'wgsl/a.wgsl'), ''); writeFileSync(join(root, 'src/kv/m/a.wgsl'), ''); writeFileSync(join(root, 'src/kv/m/b.wgsl'), '');
    assert.throws(() => shaderFiles(root), /two WGSL shaders named a: wgsl\/a\.wgsl and src\/kv\/m\/a\.wgsl/);
    rmSync(join(root, 'wgsl/a.wgsl'));
    assert.equal(shaderFiles(root), [{ name: 'a', path: 'src/kv/m/a.wgsl' }, { name: 'b', path: 'src/kv/m/b.wgsl' }]);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test.run();
