// Seeded fuzzing of every parser of untrusted input (issue 18): safetensors headers, the sharded
// index, config.json, pattern TSV + JSON, tokenizer files, GGUF files (header, metadata, tensor
// table, tokenizer metadata), the --gpu-budget and --topk flags and the API's offload.topk, HTTP
// requests to `duet web` and `duet serve`, `duet dha --resume`'s saved state (training_state.json,
// re-hashed in its manifest) and `duet dha plot`'s dha.json. Each mutated input must parse into a
// valid result or be refused with a plain Error or a DuetError naming the file or field (a 4xx
// answer in OpenAI's error shape for `duet serve`); anything else (TypeError, RangeError, a read outside the
// file, a 500) fails with the case to replay. A few hundred cases per parser: seconds in all.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdtempSync, cpSync, symlinkSync, writeFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuzz, memoryFiles, mutateBytes, mutateJson, mutateText, type Random } from './helpers/fuzz.ts';
import { encodeSafetensorsF32, readCheckpointIndex, readSafetensorsHeader, readTensor } from '../src/model/safetensors.ts';
import { parseModelConfig } from '../src/model/config.ts';
import { readJson } from '../src/model/files.ts';
import { loadTokenizer } from '../src/model/checkpoint.ts';
import { parsePattern } from '../src/attention/pattern.ts';
import { bytesOption, offloadFlags, topkFlag } from '../src/cli/options.ts';
import { flagMessage } from '../src/cli/flags.ts';
import { DuetError } from '../src/errors.ts';
import { offloadSettings } from '../src/kv/magicpig/settings.ts';
import { checkTopk, type TopKChoice } from '../src/kv/magicpig/topk.ts';
import { startWebServer } from '../src/cli/web.ts';
import { loadModel } from '../src/node.ts';
import { DuetServer } from '../src/server/server.ts';
import { byteLevelTokenizer, writeCheckpoint } from './helpers/checkpoint.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { matrixF32 } from '../src/model/weights.ts';
import { concatBytes, encodeGgufHeader, parseGgufHeader, ValueType, type GgufHeader, type GgufTensorInfo, type GgufWriteValue } from '../src/model/gguf.ts';
import { ggufChunks } from '../src/model/gguf-write.ts';
import { encodeMatrix } from '../src/model/gguf-encode.ts';
import { tokenizerToGguf } from '../src/model/gguf-tokenizer.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { DHA_METHODS, type ConvertOptions } from '../src/dha/convert.ts';
import { compareArms, lossCurveSvg, type Comparison } from '../src/dha/plot.ts';
import { readArm } from '../src/node/dha-plot.ts';
import { saveModel } from '../src/node/checkpoint-io.ts';
import { convertToDha, DHA_STATE } from '../src/node/dha.ts';
import { Arena } from '../src/train/arena.ts';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';

const CASES = 400;
const f32 = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + s));
const SAFETENSORS = encodeSafetensorsF32([
  { name: 'a', shape: [3, 5], data: f32(15, 1) }, { name: 'b', shape: [7], data: f32(7, 2) }, { name: 'c', shape: [2, 2, 2], data: f32(8, 3) },
], { format: 'pt' });

/** Accepted safetensors: every tensor inside the file, no two sharing bytes, each one decodable. */
async function checkTensors(files: ReturnType<typeof memoryFiles>, tensors: Awaited<ReturnType<typeof readSafetensorsHeader>>): Promise<void> {
  const spans = tensors.map((t) => [t.offset, t.offset + t.byteLength, t.file] as const).sort((x, y) => x[0] - y[0]);
  for (const t of tensors) {
    const size = await files.size(t.file);
    assert.ok(t.offset >= 8 && t.offset + t.byteLength <= size, `${t.name} inside its file`);
    assert.is((await readTensor(files, t)).length, t.shape.reduce((a, b) => a * b, 1));
  }
  for (let i = 1; i < spans.length; i++) if (spans[i][2] === spans[i - 1][2] && spans[i][0] < spans[i][1]) assert.ok(spans[i][0] >= spans[i - 1][1], 'no overlap');
}

test('fuzz: safetensors headers (byte mutations and structural JSON mutations)', async () => {
  const len = Number(new DataView(SAFETENSORS.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(SAFETENSORS.subarray(8, 8 + len)));
  const data = SAFETENSORS.subarray(8 + len);
  const structural = (r: Random): Uint8Array => {
    const json = new TextEncoder().encode(JSON.stringify(mutateJson(r, header)));
    const out = new Uint8Array(8 + json.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8); out.set(data, 8 + json.length);
    return out;
  };
  const res = await fuzz('safetensors header', { seed: 1, cases: CASES },
    (r, i) => (i % 2 ? structural(r) : mutateBytes(r, SAFETENSORS)),
    async (bytes) => {
      const files = memoryFiles('fuzz', { 'model.safetensors': bytes });
      await checkTensors(files, await readSafetensorsHeader(files, 'model.safetensors'));
    },
    (m) => m.startsWith('model.safetensors'));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: the sharded index (weight_map names, shard names, missing and duplicated tensors)', async () => {
  const shard = (names: string[]) => encodeSafetensorsF32(names.map((n, i) => ({ name: n, shape: [4], data: f32(4, i) })));
  const index = { metadata: { total_size: 96 }, weight_map: { x: 'model-1.safetensors', y: 'model-1.safetensors', z: 'model-2.safetensors' } };
  const res = await fuzz('sharded index', { seed: 2, cases: CASES },
    (r, i) => (i % 3 === 0 ? mutateText(r, JSON.stringify(index)) : JSON.stringify(mutateJson(r, index))),
    async (text) => {
      const files = memoryFiles('fuzz', { 'model.safetensors.index.json': text, 'model-1.safetensors': shard(['x', 'y']), 'model-2.safetensors': shard(['z']), 'secret.txt': 'not a shard' });
      const all = await readCheckpointIndex(files);
      for (const t of all.values()) assert.ok(/^model-[12]\.safetensors$/.test(t.file), `shard ${t.file} is a model file`);
    },
    (m) => /model\.safetensors\.index\.json|model-\d\.safetensors|secret\.txt|fuzz/.test(m));
  assert.ok(res.refused > 0 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: size flags (duet memory --gpu-budget): a whole number of bytes from 1 to 2^53 − 1, or an error naming the flag', async () => {
  const pieces = ['0', '1', '7', '16', '.', '5', ' ', 'GiB', 'MiB', 'KiB', 'TiB', 'GB', 'g', '-', '+', 'e', '3', 'x', '9'.repeat(400), '\u0000'];
  const unit: Record<string, number> = { '': 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };
  const res = await fuzz('--gpu-budget', { seed: 11, cases: CASES },
    (r) => Array.from({ length: 1 + Math.floor(r() * 5) }, () => pieces[Math.floor(r() * pieces.length)]).join(''),
    (text) => {
      const n = bytesOption(text, '--gpu-budget')!;
      assert.ok(Number.isSafeInteger(n) && n >= 1, `${JSON.stringify(text)} → ${n}`);
      const m = /^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB)?\s*$/.exec(text);
      assert.ok(m !== null, `${JSON.stringify(text)} accepted`);
      assert.is(n, Math.floor(Number(m![1]) * unit[m![2] ?? '']), JSON.stringify(text));
    },
    (m) => m.startsWith('--gpu-budget: expected a size such as 16GiB'));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: --topk N|P% (generate, eval, memory, serve): a count the library accepts, a fraction in (0, 1], or an error naming the flag', async () => {
  const pieces = ['0', '1', '4', '40', '.', '5', ' ', '%', '%%', '-', '+', 'e', '3', 'x', ',', '100', '9'.repeat(400), '\u0000', 'keys'];
  const res = await fuzz('--topk', { seed: 12, cases: CASES },
    (r) => Array.from({ length: 1 + Math.floor(r() * 4) }, () => pieces[Math.floor(r() * pieces.length)]).join(''),
    (text) => {
      const t = topkFlag(text);
      checkTopk(t); // what the flag gives, the library takes
      const m = /^\s*(?:(\d+)|(\d*\.?\d+)%)\s*$/.exec(text);
      assert.ok(m !== null, `${JSON.stringify(text)} accepted`);
      assert.equal(t, m![1] !== undefined ? { keys: Number(m![1]) } : { fraction: Number(m![2]) / 100 }, JSON.stringify(text));
      const flags = offloadFlags({ topk: text, 'dense-layers': '1' })!;
      assert.equal(flags, { topk: t, denseLayers: [1] });
    },
    (m) => m.startsWith('--topk takes N (keys per decode step, an integer ≥ 1) or P% (of the offloaded keys, 0 < P ≤ 100); got '));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: the API\'s offload.topk (loadModel, kvMemory): accepted as { keys } or { fraction }, else a DuetError naming offload.topk (--topk in the CLI)', async () => {
  const kinds = [[true, false], [false, true]]; // retrieval heads per layer and KV head
  const seeds = [{ keys: 40 }, { fraction: 0.025 }];
  const res = await fuzz('offload.topk', { seed: 13, cases: CASES },
    (r, i) => mutateJson(r, seeds[i % 2]),
    (topk) => {
      try {
        const { settings } = offloadSettings({ topk: topk as TopKChoice }, kinds, 8, 'f32');
        const t = settings.topk!;
        assert.equal(t, topk);
        assert.ok('keys' in t ? Number.isInteger(t.keys) && t.keys >= 1 : t.fraction > 0 && t.fraction <= 1, JSON.stringify(t));
      } catch (e) {
        if (!(e instanceof DuetError)) throw e;
        assert.is(e.field, 'offload.topk', e.message);
        assert.ok(flagMessage(e).startsWith('--topk '), flagMessage(e));
        throw e;
      }
    },
    (m) => m.startsWith('offload.topk '));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: config.json', async () => {
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2,
    num_attention_heads: 8, num_key_value_heads: 2, rms_norm_eps: 1e-5, rope_theta: 500000, max_position_embeddings: 512, vocab_size: 100,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    tie_word_embeddings: false, eos_token_id: [1, 2], hidden_act: 'silu', sliding_window: null,
  };
  const res = await fuzz('config.json', { seed: 3, cases: CASES },
    (r, i) => (i % 3 === 0 ? mutateText(r, JSON.stringify(config)) : JSON.stringify(mutateJson(r, config))),
    async (text) => {
      const c = parseModelConfig(await readJson(memoryFiles('fuzz', { 'config.json': text }), 'config.json'), 'config.json');
      for (const k of ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize', 'maxPositionEmbeddings'] as const) {
        assert.ok(Number.isInteger(c[k]) && c[k] >= 1, `${k} = ${c[k]}`);
      }
      assert.is(c.numHeads % c.numKvHeads, 0);
      assert.is(c.headDim % 2, 0);
      assert.ok(c.ropeTheta > 0 && c.rmsNormEps > 0);
    },
    (m) => m.startsWith('config.json'));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: pattern full_attention_heads.tsv and config.json', async () => {
  const tsv = '1.00e+00\t2.50e-01\t0.00e+00\n7.50e-01\t5.00e-01\t1.00e-02\n';
  const cfg = JSON.stringify({ sink_size: 16, recent_size: 64, deploy_sink_size: null, deploy_recent_size: null, threshold: 0.5 });
  const res = await fuzz('pattern', { seed: 4, cases: CASES },
    (r, i) => (i % 2 ? { tsv: mutateText(r, tsv), cfg } : { tsv, cfg: i % 4 ? JSON.stringify(mutateJson(r, JSON.parse(cfg))) : mutateText(r, cfg) }),
    ({ tsv: t, cfg: c }) => {
      const p = parsePattern(t, c, 2, 3, 'pat');
      assert.is(p.alphas.length, 2);
      for (const row of p.alphas) { assert.is(row.length, 3); for (const a of row) assert.ok(a >= 0 && a <= 1); }
      assert.ok(Number.isInteger(p.sink) && p.sink >= 0 && Number.isInteger(p.recent) && p.recent >= 1);
    },
    (m) => m.startsWith('pat/full_attention_heads.tsv') || m.startsWith('pat/config.json'));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test('fuzz: tokenizer.json and tokenizer_config.json', async () => {
  const { tokenizer, config } = byteLevelTokenizer(301);
  const res = await fuzz('tokenizer files', { seed: 5, cases: 200 },
    (r, i) => (i % 2
      ? { tok: i % 4 === 1 ? mutateText(r, JSON.stringify(tokenizer)) : JSON.stringify(mutateJson(r, tokenizer)), cfg: JSON.stringify(config) }
      : { tok: JSON.stringify(tokenizer), cfg: i % 4 ? JSON.stringify(mutateJson(r, config)) : mutateText(r, JSON.stringify(config)) }),
    async ({ tok, cfg }) => {
      const t = await loadTokenizer(memoryFiles('fuzz', { 'tokenizer.json': tok, 'tokenizer_config.json': cfg }));
      assert.ok(t);
    },
    (m) => /tokenizer(_config)?\.json/.test(m));
  assert.ok(res.refused > 0 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

/** A tiny valid GGUF as `duet quantize` writes it: q8_0 matrices, F32 norms, a byte-level tokenizer. */
async function tinyGguf(): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'duet-fuzz-gguf-'));
  await writeCheckpoint(dir, { modelType: 'llama', layers: 2, hidden: 32, intermediate: 64, heads: 2, kvHeads: 1, vocab: 300, maxPositions: 64 });
  const ckpt = await loadCheckpoint(nodeModelFiles(dir));
  const { tokenizer, config } = byteLevelTokenizer(300);
  const tok = tokenizerToGguf('tokenizer.json', tokenizer as Record<string, unknown>, config as Record<string, unknown>, 300);
  return concatBytes(ggufChunks(ckpt.config, ckpt.weights, { name: 'fuzz', type: 'q8_0', encode: encodeMatrix, tokenizer: tok }));
}

const HUGE = [0, 1, 3, 2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 53 - 1];

/** A structural edit of a GGUF: its header re-encoded with one field made wrong, the data kept. */
function mutateGgufStructure(r: Random, h: GgufHeader, data: Uint8Array): Uint8Array {
  const meta: Array<[string, GgufWriteValue]> = [...h.metadata].map(([k, e]) => [k, (e.type === ValueType.ARRAY
    ? { type: e.type, itemType: e.itemType, value: [...(e.value as unknown[])] } : { type: e.type, value: e.value }) as GgufWriteValue]);
  const infos: GgufTensorInfo[] = [...h.tensors.values()].map((t) => ({ name: t.name, dims: [...t.dims], type: t.type, offset: t.offset - h.dataOffset }));
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const t = pick(infos), m = pick(meta);
  let version = 3;
  switch (Math.floor(r() * 14)) {
    case 0: t.dims[Math.floor(r() * t.dims.length)] = pick(HUGE); break; // huge or empty dimension
    case 1: t.dims = t.dims.length < 4 && r() < 0.5 ? [...t.dims, pick(HUGE)] : t.dims.slice(1); break; // another rank
    case 2: t.type = pick([1, 2, 3, 6, 10, 12, 13, 14, 15, 16, 30, 31, 99, 2 ** 32 - 1]); break; // another or unknown ggml type
    case 3: t.offset = pick([...HUGE, 32, 64, 96, 7, data.length, data.length - 32]); break; // out of bounds, unaligned, overlapping
    case 4: infos.splice(infos.indexOf(t), 1); break; // a missing tensor
    case 5: infos.push({ ...t, name: pick([t.name, 'blk.7.attn_q.weight', 'rope_freqs.weight', `blk.${pick(HUGE)}.ffn_up.weight`]) }); break;
    case 6: if (m[1].type === ValueType.ARRAY) m[1].value.length = Math.floor(r() * m[1].value.length); else m[1] = { type: ValueType.U32, value: pick(HUGE) }; break;
    case 7: m[1] = pick<GgufWriteValue>([{ type: ValueType.STRING, value: 'llama' }, { type: ValueType.F32, value: -1 }, { type: ValueType.I32, value: -7 },
      { type: ValueType.BOOL, value: true }, { type: ValueType.U64, value: 2 ** 53 - 1 }, { type: ValueType.ARRAY, itemType: ValueType.U32, value: [1, 2] },
      { type: ValueType.ARRAY, itemType: ValueType.STRING, value: [] }]); break; // a value of another type
    case 8: meta.push([pick(['general.alignment', 'llama.attention.key_length', 'llama.rope.scaling.type', 'tokenizer.ggml.eos_token_id', 'llama.attention.sliding_window']),
      pick<GgufWriteValue>([{ type: ValueType.U32, value: pick([0, 3, 16, 64, 2 ** 31]) }, { type: ValueType.STRING, value: 'linear' }])]); break;
    case 9: meta.splice(meta.indexOf(m), 1); break; // a missing key
    case 10: case 11: case 12: { // a model dimension (block_count, head counts, lengths) huge, zero or off by one
      const dims = meta.filter(([k, v]) => k.startsWith('llama.') && v.type === ValueType.U32);
      const dim = r() < 0.3 ? dims.find(([k]) => k === 'llama.block_count')! : pick(dims);
      dim[1] = { type: ValueType.U32, value: pick([0, 1, 2 ** 32 - 1, 1e9, (dim[1].value as number) + 1, (dim[1].value as number) * 2]) };
      break;
    }
    default: version = pick([1, 2, 4]);
  }
  const header = encodeGgufHeader(meta, infos, 32, version);
  return concatBytes([header, data]);
}

test('fuzz: GGUF files (bytes, truncation, counts, dims, types, offsets, metadata) load correctly or fail naming the file', async () => {
  const good = await tinyGguf();
  const header = parseGgufHeader(good, good.length, 'fuzz.gguf');
  const data = good.subarray(header.dataOffset);
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const res = await fuzz('GGUF', { seed: 7, cases: 300 },
    (r, i) => {
      switch (i % 5) {
        case 0: return mutateBytes(r, good);
        case 1: { // bytes of the header only, or the tensor/metadata counts
          const b = good.slice();
          if (r() < 0.3) view(b).setBigUint64(r() < 0.5 ? 8 : 16, BigInt(HUGE[Math.floor(r() * HUGE.length)]), true);
          else for (let j = 0; j < 1 + Math.floor(r() * 4); j++) b[Math.floor(r() * header.dataOffset)] ^= 1 << Math.floor(r() * 8);
          return b;
        }
        case 2: return good.subarray(0, Math.floor(r() * good.length)); // truncation
        default: return mutateGgufStructure(r, header, data);
      }
    },
    async (bytes) => {
      const files = { ...memoryFiles('fuzz.gguf', { 'model.gguf': bytes }), gguf: 'model.gguf' };
      const c = await loadCheckpoint(files);
      const { config: k, weights: w } = c;
      assert.is(w.layers.length, k.numLayers);
      assert.is(matrixF32(w.embed).length, k.vocabSize * k.hiddenSize);
      assert.is(matrixF32(w.layers[0].wq).length, k.numHeads * k.headDim * k.hiddenSize);
      if (c.tokenizer) assert.ok(c.tokenizer.encode('hello world').every((id) => Number.isInteger(id) && id >= 0 && id < k.vocabSize));
    },
    (m) => m.startsWith('fuzz.gguf'));
  assert.ok(res.refused > 100 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

/**
 * One raw request; resolves with the answer once it is complete (headers + Content-Length bytes)
 * or the server closes. A request the server is still waiting on (a mutation cut its end) resolves
 * with what came after a short quiet spell: waiting for the rest of a request is correct.
 */
function rawRequest(port: number, bytes: Uint8Array): Promise<string> {
  return new Promise((done, fail) => {
    const socket = connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    let quiet: NodeJS.Timeout;
    const finish = () => { clearTimeout(quiet); socket.destroy(); done(got.toString('latin1')); };
    const arm = () => { clearTimeout(quiet); quiet = setTimeout(finish, 250); };
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end >= 0) {
        const length = /\r\ncontent-length: *(\d+)/i.exec(got.subarray(0, end).toString('latin1'));
        if (length && got.length >= end + 4 + Number(length[1])) { finish(); return; }
      }
      arm();
    });
    socket.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? finish() : fail(e)));
    socket.on('close', finish);
    socket.write(bytes);
    arm();
  });
}

/**
 * 200 mutated requests to a running `duet web`: every answer is a well-formed non-5xx response, none
 * carries `secret`, and none to a foreign Host succeeds. Returns a GET helper for direct checks.
 */
async function fuzzWebServer(port: number, seed: number, paths: string[], secret: string) {
  const headers = ['Range: bytes=0-10', 'Range: bytes=999999-', 'Range: bytes=5-2', 'Range: items=0-1', 'Range: bytes=0-1,3-4', 'Range: bytes=-0', 'Range: bytes=-99999999999999999999'];
  let unanswered = 0;
  const res = await fuzz('duet web request', { seed, cases: 200 },
    (r, i) => {
      const path = paths[Math.floor(r() * paths.length)];
      const host = i % 7 === 0 ? 'evil.example:1234' : `127.0.0.1:${port}`;
      const text = `${i % 11 === 0 ? 'POST' : 'GET'} ${path} HTTP/1.1\r\nHost: ${host}\r\n${headers[Math.floor(r() * headers.length)]}\r\nConnection: close\r\n\r\n`;
      return i % 3 === 0 ? mutateBytes(r, new TextEncoder().encode(text)) : new TextEncoder().encode(text);
    },
    async (bytes) => {
      const answer = await rawRequest(port, bytes);
      if (answer === '') { unanswered++; return; } // still waiting for the rest of a cut request
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer);
      assert.ok(status, `a status line: ${answer.slice(0, 60)}`);
      assert.ok(Number(status![1]) < 500, `no server error: ${answer.slice(0, 60)}`);
      assert.not.ok(answer.includes(secret), 'nothing outside what is served');
      const req = Buffer.from(bytes).toString('latin1');
      if (!req.includes(`Host: 127.0.0.1:${port}\r\n`) && Number(status![1]) < 400) assert.unreachable(`answered a request without our Host: ${req.slice(0, 80)}`);
    },
    () => false);
  assert.is(res.parsed, 200);
  assert.ok(unanswered < 40, `${unanswered} of 200 requests unanswered`);
  return async (path: string, extra = '', host = `127.0.0.1:${port}`) => rawRequest(port, new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`));
}

/** A scratch folder with a demo page and a secret file that must never be served. */
function webScratch(name: string): { base: string; page: string } {
  const base = mkdtempSync(join(tmpdir(), `duet-fuzz-${name}-`));
  writeFileSync(join(base, 'secret.txt'), 'SECRET-CONTENT');
  mkdirSync(join(base, 'page'));
  writeFileSync(join(base, 'page/index.html'), '<!doctype html>page');
  return { base, page: join(base, 'page') };
}

test('fuzz: HTTP requests to duet web never leave the served folders and always get a well-formed answer', async () => {
  // A model folder with a symlink to a secret beside it: neither may ever be served.
  const { base, page } = webScratch('web');
  const model = join(base, 'model');
  cpSync(new URL('../fixtures/tiny-random', import.meta.url).pathname, model, { recursive: true });
  symlinkSync(join(base, 'secret.txt'), join(model, 'link.txt'));
  const server = await startWebServer({ port: 0, model, pattern: null, root: page });
  const port = Number(new URL(server.url).port);
  const paths = ['/', '/model/config.json', '/model/link.txt', '/model/../secret.txt', '/model/%2e%2e/secret.txt', '/model/..%2fsecret.txt',
    '/..%2f..%2fsecret.txt', '//secret.txt', '/model/%00', '/served.json', '/model/model.safetensors', '/%', '/model/./config.json'];
  try {
    const get = await fuzzWebServer(port, 6, paths, 'SECRET-CONTENT');
    // Direct checks of each rule: DNS rebinding, symlinks, unsatisfiable and multiple ranges.
    assert.match(await get('/model/config.json', '', 'evil.example'), /^HTTP\/1\.1 421 /);
    assert.match(await get('/model/config.json', '', `localhost:${port}`), /^HTTP\/1\.1 200 /);
    assert.match(await get('/model/link.txt'), /^HTTP\/1\.1 403 /);
    const whole = await get('/model/config.json', 'Range: bytes=999999-\r\n');
    assert.match(whole, /^HTTP\/1\.1 200 /, 'an unsatisfiable range gets the whole file');
    assert.match(await get('/model/config.json', 'Range: bytes=0-1,3-4\r\n'), /^HTTP\/1\.1 200 /);
    assert.match(await get('/model/config.json', 'Range: bytes=0-9\r\n'), /^HTTP\/1\.1 206 [\s\S]*Content-Range: bytes 0-9\//i);
  } finally {
    await server.close();
  }
});

test('fuzz: duet web --model FILE.gguf serves that one file, reached through a symlink, and nothing else in its folder', async () => {
  // The GGUF sits beside a secret and another model file; the server is given a symlink to it.
  const { base, page } = webScratch('web-gguf');
  const store = join(base, 'store');
  mkdirSync(store);
  const gguf = await tinyGguf();
  writeFileSync(join(store, 'm.gguf'), gguf);
  writeFileSync(join(store, 'other.gguf'), 'OTHER-MODEL');
  writeFileSync(join(store, 'notes.txt'), 'OTHER-MODEL notes');
  symlinkSync(join(store, 'm.gguf'), join(base, 'link.gguf'));
  const server = await startWebServer({ port: 0, model: join(base, 'link.gguf'), pattern: null, root: page });
  const port = Number(new URL(server.url).port);
  const paths = ['/', '/served.json', '/model/m.gguf', '/model/other.gguf', '/model/notes.txt', '/model/', '/model/link.gguf', '/model/../secret.txt',
    '/model/m.gguf/../other.gguf', '/model/%2e%2e/secret.txt', '/model/M.GGUF', '/model/m.gguf%00', '/model/./m.gguf'];
  try {
    const get = await fuzzWebServer(port, 7, paths, 'OTHER-MODEL');
    const served = await get('/served.json');
    assert.match(served, /"url":"model\/m\.gguf"/, 'the page is pointed at the real file name');
    assert.match(await get('/model/m.gguf', 'Range: bytes=0-3\r\n'), /^HTTP\/1\.1 206 [\s\S]*\r\n\r\nGGUF$/);
    for (const p of ['/model/other.gguf', '/model/notes.txt', '/model/link.gguf', '/model/']) {
      assert.match(await get(p), /^HTTP\/1\.1 4\d\d /, `${p} is refused`);
    }
    for (const p of ['/model/../secret.txt', '/model/%2e%2e/secret.txt']) assert.not.match(await get(p), /SECRET-CONTENT/);
  } finally {
    await server.close();
  }
});

/** An HTTP/1.1 chunked body decoded (the server streams server-sent events that way). */
function dechunk(raw: string): string {
  let out = '', at = 0;
  for (;;) {
    const eol = raw.indexOf('\r\n', at);
    const size = parseInt(raw.slice(at, eol), 16);
    if (eol < 0 || !(size > 0)) return out;
    out += raw.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

test('fuzz: HTTP requests to duet serve get a completion or a 4xx in OpenAI\'s error shape, never a 500, a stack or a hang', async () => {
  const model = await loadModel(new URL('../fixtures/tiny-random', import.meta.url).pathname, { device: 'cpu', threads: 1, contextLength: 48, id: 'tiny' });
  const server = new DuetServer(model, { port: 0, apiKey: 'k', maxBodyBytes: 4096 });
  const { port } = await server.listen();
  const chat = { model: 'tiny', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }], max_tokens: 4, temperature: 0.7, top_p: 0.9, seed: 3, stop: ['\n'], stream: false };
  const completion = { model: 'tiny', prompt: 'hello', max_tokens: 3, stream: true, stream_options: { include_usage: true } };
  const routes = ['POST /v1/chat/completions', 'POST /v1/completions', 'GET /v1/models', 'GET /v1/models/tiny', 'GET /health', 'GET /v1/models/%E0%A4%A',
    'DELETE /v1/models', 'PUT /v1/chat/completions', 'POST /v1/chat/completions/', 'GET /v1/chat/completions', 'POST //v1//completions', 'OPTIONS *',
    'POST http://127.0.0.1/v1/completions', 'GET /%', 'POST /v1/completions?x=%zz', 'BREW /coffee'];
  const hosts = [`127.0.0.1:${port}`, `localhost:${port}`, `127.0.0.1:${port + 1}`, 'evil.example', `evil.example:${port}`, '', '127.0.0.1'];
  const auths = ['Authorization: Bearer k\r\n', 'Authorization: Bearer nope\r\n', '', 'Authorization: Basic aw==\r\n', 'Authorization: Bearer \r\n'];
  let unanswered = 0;
  try {
    const res = await fuzz('duet serve request', { seed: 8, cases: 240 },
      (r, i) => {
        const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
        const route = i % 4 === 0 ? pick(routes) : pick(routes.slice(0, 2));
        const seed = route.includes('chat') ? chat : completion;
        const body = i % 5 === 0 ? mutateText(r, JSON.stringify(seed)) : i % 5 === 1 ? JSON.stringify(seed) : JSON.stringify(mutateJson(r, seed));
        const bytes = Buffer.byteLength(body);
        const length = i % 9 === 0 ? pick(['Content-Length: 0\r\n', `Content-Length: ${bytes + 5}\r\n`, 'Content-Length: -1\r\n', 'Content-Length: 99999999\r\n', 'Transfer-Encoding: chunked\r\n', ''])
          : `Content-Length: ${bytes}\r\n`;
        const host = i % 6 === 0 ? pick(hosts) : hosts[0];
        const auth = i % 7 === 0 ? pick(auths) : auths[0];
        const type = i % 8 === 0 ? pick(['Content-Type: text/plain\r\n', '', 'Content-Type: application/json; charset=latin1\r\n']) : 'Content-Type: application/json\r\n';
        const text = `${route} HTTP/1.1\r\nHost: ${host}\r\n${auth}${type}${length}Connection: close\r\n\r\n${body}`;
        return i % 10 === 3 ? mutateBytes(r, new TextEncoder().encode(text)) : new TextEncoder().encode(text);
      },
      async (bytes) => {
        const answer = await rawRequest(port, bytes);
        if (answer === '') { unanswered++; return; } // still waiting for the rest of the body
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer);
        assert.ok(status, `a status line: ${answer.slice(0, 80)}`);
        const code = Number(status![1]);
        const head = answer.slice(0, answer.indexOf('\r\n\r\n'));
        const raw = answer.slice(head.length + 4);
        const body = /\r\ntransfer-encoding: chunked/i.test(head) ? dechunk(raw) : raw;
        assert.ok(code < 500, `no server error: ${answer.slice(0, 400)}`);
        assert.not.match(body, /\n\s+at |node:internal|\.ts:\d+/, `no stack trace: ${body.slice(0, 300)}`);
        const req = Buffer.from(bytes).toString('latin1');
        if (code >= 400) {
          if (code === 400 && !/content-type: application\/json/i.test(answer)) return; // Node's own answer to a malformed request line or header
          const e = JSON.parse(body).error;
          assert.type(e?.message, 'string', body);
          assert.type(e.type, 'string', body);
          assert.ok('param' in e && 'code' in e, body);
          return;
        }
        assert.ok(req.includes(`Host: 127.0.0.1:${port}\r\n`) || req.includes(`Host: localhost:${port}\r\n`), `answered ${code} without our Host (port ${port}): ${JSON.stringify(req.slice(0, 60))}`);
        if (/content-type: text\/event-stream/i.test(answer)) {
          assert.ok(body.trimEnd().endsWith('data: [DONE]'), `a stream ends with [DONE]: ${body.slice(-200)}`);
          for (const line of body.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')) JSON.parse(line.slice(6));
        } else {
          const o = JSON.parse(body);
          if (o.object === 'chat.completion') assert.type(o.choices[0].message.content, 'string');
          else if (o.object === 'text_completion') assert.type(o.choices[0].text, 'string');
          else assert.ok(o.object === 'list' || o.object === 'model' || o.status === 'ok', body);
        }
      },
      () => false);
    assert.is(res.parsed, 240);
    assert.ok(unanswered < 40, `${unanswered} of 240 requests unanswered`);
  } finally {
    await server.close();
    await model.dispose();
  }
});

// duet dha --resume's dha-state/ and duet dha plot's dha.json, from tiny real runs: a random 2-layer
// model on Duet's vocabulary, 6 steps of 300 tokens (DHA: 3 fusion + 3 training), one thread.
const DHA_MODEL: TrainConfig = { vocab: VOCAB_SIZE, hidden: 16, layers: 2, heads: 4, kvHeads: 4, headDim: 4, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 160 };
const DHA_RUN: ConvertOptions = { method: 'dha', budget: 0.375, tokens: 1800, tokensPerStep: 300, maxLength: 160, tasks: ['passkey'], similaritySequences: 2, validationSequences: 2, seed: 3 };
const GQA_RUN: ConvertOptions = { ...DHA_RUN, method: 'gqa-meanpool', budget: 0.5 };
const dhaScratch = mkdtempSync(join(tmpdir(), 'duet-fuzz-dha-'));
const dhaSource = join(dhaScratch, 'src');
{
  const m = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(DHA_MODEL, k)), DHA_MODEL);
  m.initialise(8);
  saveModel(dhaSource, DHA_MODEL, Float32Array.from(m.params), 4096, {});
}

/** Every file under `dir` (relative name → bytes). */
function folderBytes(dir: string, under = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const e of readdirSync(join(dir, under), { withFileTypes: true })) {
    const name = join(under, e.name);
    if (e.isDirectory()) for (const [k, v] of folderBytes(dir, name)) out.set(k, v);
    else out.set(name, readFileSync(join(dir, name)));
  }
  return out;
}

/** A stopped conversion's training_state.json replaced by `text`, re-hashed in its manifest so that only the parser stands in the way. */
function writeDhaState(out: string, text: string): void {
  const manifestPath = join(out, DHA_STATE, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  writeFileSync(join(out, DHA_STATE, 'training_state.json'), text);
  manifest.files[`${DHA_STATE}/training_state.json`] = { size: Buffer.byteLength(text), sha256: createHash('sha256').update(text).digest('hex') };
  writeFileSync(manifestPath, JSON.stringify(manifest));
}

/**
 * Resumes `out` (stopped after `step`) with `until` at that step: an accepted state ends at the
 * library's "until" refusal, before any training or writing; a refused one must name the file.
 * Either way no file of the folder may change.
 */
async function resumeUntouched(o: ConvertOptions, out: string, step: number): Promise<void> {
  const before = folderBytes(out);
  try {
    await convertToDha({ ...o, model: dhaSource, out, threads: 1, resume: true, until: step });
    assert.unreachable('a resume with until at the saved step is refused');
  } catch (e) {
    if (!(e instanceof Error && new RegExp(`^until ${step}: the saved state is after step ${step} already$`).test(e.message))) throw e;
  } finally {
    const after = folderBytes(out);
    assert.equal([...after.keys()].sort(), [...before.keys()].sort(), `${out}: no file added or removed`);
    for (const [k, v] of before) assert.ok(after.get(k)!.equals(v), `${out}/${k} unchanged`);
  }
}

/** Sets `path` (dotted, numbers index arrays) in a copy of `json`; undefined deletes it. */
function edited(json: unknown, path: string, value: unknown): unknown {
  const copy = structuredClone(json) as Record<string, unknown>;
  const keys = path.split('.');
  let at = copy as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) at = at[k] as Record<string, unknown>;
  const last = keys[keys.length - 1];
  if (value === undefined) { if (Array.isArray(at)) at.splice(Number(last), 1); else delete at[last]; } else at[last] = value;
  return copy;
}

const dhaStates = [
  { name: 'dha-fusion', o: DHA_RUN, step: 2 }, { name: 'dha-train', o: DHA_RUN, step: 4 }, { name: 'gqa-train', o: GQA_RUN, step: 2 },
] as const;
for (const s of dhaStates) await convertToDha({ ...s.o, model: dhaSource, out: join(dhaScratch, s.name), threads: 1, until: s.step, saveEvery: 1 });

test('dha --resume: each field of training_state.json damaged (re-hashed) is refused by name, the folder untouched', async () => {
  // [state, field edited, value (undefined deletes), the field the refusal names]; INF is written as 1e999 (JSON.parse: Infinity).
  const INF = '__INF__';
  const cases: Array<[string, string, unknown, string]> = [
    ['dha-fusion', 'stage', 'collapse', 'stage'], ['dha-fusion', 'stage', 'train', 'stage'], ['gqa-train', 'stage', 'fusion', 'stage'],
    ['dha-fusion', 'threads', 0, 'threads'], ['dha-fusion', 'threads', '1', 'threads'], ['dha-train', 'device', 'tpu', 'device'],
    ['dha-fusion', 'fusion', null, 'fusion'], ['dha-fusion', 'fusion.mix', [1, 2], 'fusion.mix'], ['dha-fusion', 'fusion.mix.0', '1', 'fusion.mix[0]'],
    ['dha-fusion', 'fusion.mix.3', 1e39, 'fusion.mix[3]'], ['dha-fusion', 'fusion.mixM.1', null, 'fusion.mixM[1]'], ['dha-fusion', 'fusion.mixV.2', -1, 'fusion.mixV[2]'],
    ['dha-fusion', 'fusion.lambda', [0, 0, 0, 0, 0], 'fusion.lambda'], ['dha-fusion', 'fusion.phi.0', INF, 'fusion.phi[0]'], ['dha-fusion', 'fusion.phi', undefined, 'fusion.phi'],
    ['dha-fusion', 'progress', undefined, 'progress'], ['dha-fusion', 'progress', [], 'progress'],
    ['dha-fusion', 'progress.fusionTokens', -1, 'progress.fusionTokens'], ['dha-train', 'progress.trainTokens', 1.5, 'progress.trainTokens'],
    ['gqa-train', 'progress.trainTokens', 2 ** 53, 'progress.trainTokens'], ['dha-fusion', 'progress.fusionStart', 'NaN', 'progress.fusionStart'],
    ['dha-fusion', 'progress.fusionStart', null, 'progress.fusionStart'], ['dha-train', 'progress.fused', null, 'progress.fused'],
    ['dha-train', 'progress.converted', null, 'progress.converted'], ['gqa-train', 'progress.converted', INF, 'progress.converted'],
    ['dha-train', 'progress.constraintsAtCollapse', [], 'progress.constraintsAtCollapse'], ['dha-train', 'progress.constraintsAtCollapse.1.value', '0', 'progress.constraintsAtCollapse[1].value'],
    ['dha-train', 'progress.constraintsAtCollapse.0', 7, 'progress.constraintsAtCollapse[0]'], ['dha-fusion', 'progress.curve', {}, 'progress.curve'],
    ['dha-fusion', 'progress.curve.0.validationLoss', 'x', 'progress.curve[0].validationLoss'], ['dha-train', 'progress.curve.1.stage', 'collapse', 'progress.curve[1].stage'],
    ['dha-train', 'progress.curve.0.step', 99, 'progress.curve[0].step'], ['dha-fusion', 'progress.curve.0.constraint', null, 'progress.curve[0].constraint'],
    ['gqa-train', 'progress.curve.0.tokens', -3, 'progress.curve[0].tokens'], ['dha-fusion', 'progress.history.1', undefined, 'progress.history'],
    ['dha-train', 'progress.history.1.step', 5, 'progress.history[1].step'], ['dha-train', 'progress.history.0.loss', INF, 'progress.history[0].loss'],
    ['gqa-train', 'progress.history.0', null, 'progress.history[0]'], ['gqa-train', 'progress.seconds', -1, 'progress.seconds'], ['dha-train', 'progress.seconds', undefined, 'progress.seconds'],
    ['dha-fusion', 'step', 3, 'progress.history'], ['dha-fusion', 'step', -1, 'step'], ['dha-train', 'parameters', 12, 'parameters'],
  ];
  for (const [name, field, value, named] of cases) {
    const s = dhaStates.find((x) => x.name === name)!, out = join(dhaScratch, name), good = readFileSync(join(out, DHA_STATE, 'training_state.json'), 'utf8');
    writeDhaState(out, JSON.stringify(edited(JSON.parse(good), field, value)).replace(`"${INF}"`, '1e999'));
    let message = '(accepted)';
    try { await resumeUntouched(s.o, out, s.step); } catch (e) { message = (e as Error).message; }
    assert.ok(message.includes(`${DHA_STATE}/training_state.json: `) && (named === 'parameters' || message.includes(`"${named}"`)), `${name} ${field} = ${JSON.stringify(value)}: refused naming "${named}"; got: ${message}`);
    writeDhaState(out, good);
  }
  // Each state, restored, still resumes to the end.
  for (const s of dhaStates) await resumeUntouched(s.o, join(dhaScratch, s.name), s.step);
});

test('fuzz: dha --resume training_state.json (structural and byte mutations, re-hashed): resumes or is refused naming the file, the folder untouched', async () => {
  for (const [k, s] of dhaStates.entries()) {
    const out = join(dhaScratch, s.name), good = readFileSync(join(out, DHA_STATE, 'training_state.json'), 'utf8');
    const { plan, ...rest } = JSON.parse(good);
    const res = await fuzz(`dha state ${s.name}`, { seed: 20 + k, cases: 120 },
      // The plan is checked by the model shape only: mutations go to the rest, where the conversion's own fields are.
      (r, i) => (i % 4 === 0 ? mutateText(r, good) : JSON.stringify({ plan, ...(mutateJson(r, rest) as object) })),
      async (text) => { writeDhaState(out, text); await resumeUntouched(s.o, out, s.step); },
      (m) => m.includes(`${DHA_STATE}/training_state.json: `));
    writeDhaState(out, good);
    assert.ok(res.refused > 30 && res.parsed > 0, `${s.name}: parsed ${res.parsed}, refused ${res.refused}`);
  }
});

test('fuzz: duet dha plot reads dha.json (structural and byte mutations, truncation): a valid arm or an error naming the file and field', async () => {
  const runs = { dha: join(dhaScratch, 'done-dha'), gqa: join(dhaScratch, 'done-gqa') };
  await convertToDha({ ...DHA_RUN, model: dhaSource, out: runs.dha, threads: 1 });
  await convertToDha({ ...GQA_RUN, model: dhaSource, out: runs.gqa, threads: 1 });
  const gqa = readArm(runs.gqa), dir = join(dhaScratch, 'plot'), file = join(dir, 'dha.json');
  mkdirSync(dir);
  const good = readFileSync(join(runs.dha, 'dha.json'), 'utf8'), report = JSON.parse(good);
  // What the plot reads, for the structural mutations to land on (the rest of the report is not read).
  const { method, budget, losses, curve, history } = report;
  // Each field the plot reads, damaged: refused naming it. NAN is written as a bare NaN (not JSON), INF as 1e999 (Infinity).
  const NAN = '__NAN__', INF = '__INF__';
  const cases: Array<[string, unknown, RegExp]> = [
    ['method', undefined, /: method must be one of dha, gqa-meanpool, continued \(missing\)/], ['method', 7, /: method must be one of/],
    ['budget', 'NaN', /: budget must be a number in \(0, 1\]/], ['budget', 0, /: budget must be/], ['budget', INF, /: budget must be/], ['budget', undefined, /: budget .*\(missing\)/],
    ['losses', 5, /: losses must be an object/], ['losses.fusionStart', 'x', /: losses\.fusionStart must be a finite number or null/],
    ['curve', undefined, /: curve must be an array/], ['curve', {}, /: curve must be an array/], ['curve.0.validationLoss', '1', /: curve\[0\] needs a tokens count ≥ 0 and a finite validationLoss/],
    ['curve.1.tokens', -1, /: curve\[1\] needs/], ['curve.2', null, /: curve\[2\] needs/], ['curve.0.stage', 'x', /: curve\[0\]\.stage must be "fusion" or "train"/],
    ['curve.0.tokens', 1e9, /: curve goes back in tokens at point 1 \(1000000000 then/], ['history.2.loss', INF, /: history\[2\] needs/], ['history', 'x', /: history must be an array/], ['history.3.loss', null, /: history\[3\] needs/],
    ['history.0.stage', 'train', /: history\[1\] is a fusion point after the collapse/], ['curve.1.validationLoss', NAN, /: not valid JSON/],
  ];
  for (const [field, value, want] of cases) {
    writeFileSync(file, JSON.stringify(edited(report, field, value)).replace(`"${NAN}"`, 'NaN').replace(`"${INF}"`, '1e999'));
    assert.throws(() => readArm(dir), (e: Error) => e.constructor === Error && e.message.startsWith(`${file}: `) && want.test(e.message), `${field} = ${JSON.stringify(value)}`);
  }
  writeFileSync(file, good.slice(0, good.length >> 1));
  assert.throws(() => readArm(dir), /dha\.json: not valid JSON/, 'truncated');
  const res = await fuzz('dha.json', { seed: 30, cases: CASES },
    (r, i) => {
      if (i % 5 === 0) return mutateText(r, good);
      if (i % 5 === 1) return good.slice(0, Math.floor(r() * good.length));
      return JSON.stringify(mutateJson(r, { method, budget, losses, curve, history })).replace(/"NaN"/, () => (r() < 0.5 ? 'NaN' : '1e999'));
    },
    (text) => {
      writeFileSync(file, text);
      const arm = readArm(dir);
      assert.ok(DHA_METHODS.includes(arm.method) && arm.budget > 0 && arm.budget <= 1, `${arm.method} ${arm.budget}`);
      for (const s of [arm.validation, arm.training]) {
        s.forEach((p, i) => {
          assert.ok(Number.isFinite(p.tokens) && p.tokens >= 0 && Number.isFinite(p.loss), JSON.stringify(p));
          if (i) assert.ok(p.tokens >= s[i - 1].tokens && (p.converted || !s[i - 1].converted), 'ascending tokens, the collapse once');
        });
      }
      // The comparison refuses an arm it cannot measure by its label.
      for (const series of ['validation', 'training'] as const) {
        let c: Comparison;
        try { c = compareArms([arm, gqa], { target: 1, series }); } catch (e) { if (/^DHA|^GQA|^source/.test((e as Error).message)) continue; throw e; }
        assert.ok(c.arms.every((a) => Number.isFinite(a.finalLoss)));
        assert.match(lossCurveSvg([arm, gqa], c), /^<svg/);
      }
    },
    (m) => m.startsWith(`${file}: `) && !/undefined|\[object/.test(m));
  assert.ok(res.refused > CASES / 4 && res.parsed > 0, `parsed ${res.parsed}, refused ${res.refused}`);
});

test.run();
