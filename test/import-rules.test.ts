// Layering of src/, read from the import statements: the browser entry reaches no Node builtins and
// nothing Node-only; the backends never import the engine (their contract is src/backend); kernels
// and the model never reach up to the engine, the API, the CLI or the
// server; the library never imports the CLI. Each violation names the file and the import.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;
const SRC = join(ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    // *.as.ts are AssemblyScript kernels (compiled into the WASM module, never imported by TypeScript).
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') && !e.name.endsWith('.as.ts') ? [p] : [];
  });
}

/** Module specifiers of a file: static imports and re-exports (also `import type`), and `import('…')` with a literal. */
export function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found: string[] = [];
  for (const m of code.matchAll(/^\s*(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm)) found.push(m[1]);
  for (const m of code.matchAll(/\bimport\(\s*(?:\/\*[^*]*\*\/\s*)?['"]([^'"]+)['"]/g)) found.push(m[1]);
  return found;
}

/** `src/…` path of a relative import (`.js` → `.ts`), or the bare specifier (`node:fs`, a package). */
function resolve(from: string, spec: string): string {
  if (!spec.startsWith('.')) return spec;
  return relative(ROOT, join(dirname(from), spec)).replace(/\.js$/, '.ts');
}

const files = sources(SRC);
const graph = new Map(files.map((f) => [relative(ROOT, f), specifiers(readFileSync(f, 'utf8')).map((s) => ({ spec: s, target: resolve(f, s) }))]));

type Edge = { file: string; spec: string; target: string };
const edges: Edge[] = [...graph].flatMap(([file, imports]) => imports.map((i) => ({ file, ...i })));

/** Every import reachable from `entry`, with the chain that reaches it. */
function reachable(entry: string): Array<Edge & { chain: string[] }> {
  const out: Array<Edge & { chain: string[] }> = [];
  const seen = new Map<string, string[]>([[entry, [entry]]]);
  const queue = [entry];
  while (queue.length) {
    const file = queue.shift()!;
    for (const i of graph.get(file) ?? []) {
      out.push({ file, ...i, chain: seen.get(file)! });
      if (graph.has(i.target) && !seen.has(i.target)) { seen.set(i.target, [...seen.get(file)!, i.target]); queue.push(i.target); }
    }
  }
  return out;
}

const within = (path: string, dirs: string[]) => dirs.some((d) => path === d || path.startsWith(`${d}/`));
const show = (v: Edge & { chain?: string[] }) => `${v.file} imports '${v.spec}'${v.chain && v.chain.length > 1 ? ` (reached by ${v.chain.join(' → ')})` : ''}`;

test('the parser sees static, type, re-export and literal dynamic imports, not comments', () => {
  assert.equal(specifiers(`import { a } from './a.js';\nimport type { B } from "./b.js";\nexport * from './c.js';\nexport { d } from './d.js';\n// import x from 'nope';\n/* import y from 'nope2'; */\nimport './side.js';\nconst m = await import('node:fs');\nimport {\n  e,\n  f,\n} from './ef.js';`),
    ['./a.js', './b.js', './c.js', './d.js', './side.js', './ef.js', 'node:fs']);
  assert.ok(graph.get('src/node.ts')!.some((i) => i.target === 'src/node/load-model.ts'), 'the graph resolves .js to .ts');
  assert.ok(files.length > 50);
  for (const [file, imports] of graph) for (const i of imports) {
    if (i.spec.startsWith('.')) assert.ok(graph.has(i.target) || i.target.startsWith('src/generated/'), `${file}: '${i.spec}' resolves to no source file`);
  }
});

test('the browser entry (src/index.ts, src/worker.ts) reaches no node: builtins and nothing in src/node, src/cli or src/server', () => {
  for (const entry of ['src/index.ts', 'src/worker.ts']) {
    const bad = reachable(entry).filter((e) => e.spec.startsWith('node:') || ['webgpu', 'node-llama-cpp'].includes(e.spec) || within(e.target, ['src/node', 'src/cli', 'src/server', 'src/node.ts']));
    assert.equal(bad.map(show), [], `${entry} must stay free of Node-only code`);
  }
});

test('kernels, the model and attention never import the engine, the API, the CLI, the server or the Node entry', () => {
  const bad = edges.filter((e) => within(e.file, ['src/cpu', 'src/gpu', 'src/model', 'src/attention'])
    && within(e.target, ['src/engine/engine.ts', 'src/api', 'src/cli', 'src/server', 'src/node', 'src/node.ts', 'src/index.ts']));
  assert.equal(bad.map(show), []);
});

test('the backends (src/cpu, src/gpu, src/browser) never import src/engine: their contract lives in src/backend', () => {
  const bad = edges.filter((e) => within(e.file, ['src/cpu', 'src/gpu', 'src/browser']) && within(e.target, ['src/engine']));
  assert.equal(bad.map(show), []);
  // src/backend sits below the engine too, or the backends would reach it through their contract.
  const up = edges.filter((e) => within(e.file, ['src/backend']) && within(e.target, ['src/engine', 'src/cpu', 'src/gpu', 'src/browser', 'src/api']));
  assert.equal(up.map(show), []);
});

test('the library (src/api, src/server, src/node and the entries) never imports the CLI', () => {
  const bad = edges.filter((e) => !within(e.file, ['src/cli']) && within(e.target, ['src/cli']));
  assert.equal(bad.map(show), []);
});

test('only the CLI imports the entries (src/node.ts, src/index.ts): the library has no import cycle through them', () => {
  const bad = edges.filter((e) => !within(e.file, ['src/cli']) && ['src/node.ts', 'src/index.ts'].includes(e.target));
  assert.equal(bad.map(show), []);
});

test('src/api stays environment-free: no node: builtins, nothing from src/node or src/server', () => {
  const bad = edges.filter((e) => within(e.file, ['src/api']) && (e.spec.startsWith('node:') || within(e.target, ['src/node', 'src/node.ts', 'src/server'])));
  assert.equal(bad.map(show), []);
});

test('the demo page (web/) imports the package entry only (duet, duet/worker), never src/', () => {
  const web = join(ROOT, 'web');
  const bad = readdirSync(web).filter((f) => f.endsWith('.ts')).flatMap((f) => specifiers(readFileSync(join(web, f), 'utf8'))
    .filter((s) => !['duet', 'duet/worker'].includes(s) && !/^\.\/[\w-]+\.js$/.test(s)).map((s) => `web/${f} imports '${s}'`));
  assert.equal(bad, []);
});

test('package.json exports: a node and a default condition, types first in each; the built browser bundles import no Node code', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const dot = pkg.exports['.'];
  assert.equal(Object.keys(dot), ['node', 'default']);
  for (const c of ['node', 'default']) assert.equal(Object.keys(dot[c]), ['types', 'default'], `exports['.'].${c}: types must come first`);
  assert.is(dot.node.default, './dist/node.js');
  assert.is(dot.default.default, './dist/index.js');
  for (const bundle of ['index.js', 'worker.js']) {
    const file = join(ROOT, 'dist', bundle);
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch { throw new Error(`${file} is missing: run npm run build first`); }
    const imported = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*)["']([^"']+)["']/g)].map((m) => m[1]);
    const bad = imported.filter((s) => s.startsWith('node:') || ['webgpu', 'node-llama-cpp', 'fs', 'path', 'os', 'worker_threads'].includes(s));
    assert.equal(bad, [], `dist/${bundle} imports Node-only modules`);
    assert.equal([...new Set(imported)].filter((s) => !s.startsWith('.')).sort(), Object.keys(pkg.dependencies).sort().filter((d) => imported.includes(d)));
  }
  // The Node bundle keeps the optional packages as imports (loaded only when asked for), not inlined.
  const node = readFileSync(join(ROOT, 'dist/node.js'), 'utf8');
  assert.not.match(node, /node_modules\/node-llama-cpp\//, 'node-llama-cpp was bundled into dist/node.js');
  assert.not.match(node, /node_modules\/webgpu\//, 'webgpu was bundled into dist/node.js');
});

test.run();
