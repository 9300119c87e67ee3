// Bench output: the text tables for stdout, results.json, and the SVG plots (decode ms/token,
// decode speedup, prefill ms and KV memory vs context; one line per configuration).
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../node/atomic.js';
import { join } from 'node:path';
import { formatBytes } from '../attention/memory.js';
import { lineChart, type Series } from '../plot/svg.js';
import { layersText } from './shapes.js';
import type { BenchResults, E2eRow } from './types.js';

function num(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  return Number(v.toPrecision(digits)).toString();
}
const pct = (v: number | null) => (v === null ? '—' : `${(v * 100).toFixed(0)}%`);
const times = (v: number | null) => (v === null ? '—' : `${v.toFixed(2)}×`);

/** The first `left` columns left-aligned (text), the others right-aligned (numbers). */
function table(header: string[], rows: string[][], left = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < left ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function renderText(r: BenchResults): string {
  const out: string[] = [];
  const m = r.model;
  out.push(`Duet bench: ${m.source}, ${m.layers} of ${m.layers_total} layers (hidden ${m.hidden_size}, ${m.num_heads}q/${m.num_kv_heads}kv heads × ${m.head_dim}, vocab ${m.vocab_size})`);
  out.push(`machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${formatBytes(r.machine.memory_bytes)}, ${r.machine.platform}, node ${r.machine.node}; GPU: ${r.machine.gpu ?? 'none'}${r.machine.gpu_note ? ` (${r.machine.gpu_note})` : ''}`);
  out.push(`pattern: ${m.pattern}; sink ${m.sink}, recent ${m.recent}`);
  for (const n of r.notes) out.push(`note: ${n}`);

  if (r.probes) {
    const p = r.probes;
    out.push('', `Roofline (WASM SIMD, ${(p.threads ?? 1) === 1 ? 'one thread' : `${p.threads} threads at once`}; best of two probe runs): memory bandwidth ${num(p.bandwidth_gbps)} GB/s (streaming read of ${formatBytes(p.bandwidth_buffer_bytes)}), SIMD peak ${num(p.peak_gflops)} GFLOP/s (independent f32x4 multiply + add chains on registers)`);
  }
  if (r.gpu_probes) {
    const p = r.gpu_probes;
    out.push(`Roofline (WebGPU, ${r.machine.gpu}${r.machine.gpu_software ? ', a software GPU: says nothing about GPUs' : ''}): memory bandwidth ${num(p.bandwidth_gbps)} GB/s (coalesced read of ${formatBytes(p.bandwidth_buffer_bytes)}), f32 peak ${num(p.peak_gflops)} GFLOP/s (independent vec4 fma chains on registers)`);
  }
  const kernels = r.kernels.filter((k) => k.kernel !== 'attention-decode-layer' && k.threads === undefined);
  if (kernels.length) {
    out.push('', 'Kernels');
    out.push(table(['kernel', 'backend', 'shape', 'ms', 'GFLOP/s', 'GB/s', '% peak', '% bw', '% roofline'],
      kernels.map((k) => [k.kernel, k.backend, k.shape, num(k.ms), num(k.gflops), num(k.gbps), pct(k.pct_of_peak), pct(k.pct_of_bandwidth), pct(k.pct_of_roofline)]), 3));
  }
  const scaling = r.kernels.filter((k) => k.threads !== undefined && k.threads > 1);
  if (scaling.length) {
    out.push('', 'Thread scaling (WASM; the same kernel on one thread, then split across the threads)');
    out.push(table(['kernel', 'shape', 'threads', 'ms', '× 1 thread', '% one-thread peak (all threads)'],
      scaling.map((k) => [k.kernel, k.shape, String(k.threads), num(k.ms), times(k.speedup_vs_one_thread ?? null), pct(k.pct_of_peak)]), 2));
  }
  const layer = r.kernels.filter((k) => k.kernel === 'attention-decode-layer');
  if (layer.length) {
    const configs = [...new Set(layer.map((k) => k.config!))];
    const contexts = [...new Set(layer.map((k) => k.context!))];
    out.push('', 'Attention part of one decode step, one layer (WASM; ms, and speedup over full attention)');
    out.push(table(['context', ...configs], contexts.map((c) => [String(c), ...configs.map((cfg) => {
      const k = layer.find((x) => x.context === c && x.config === cfg);
      return k ? (cfg === 'full' ? num(k.ms) : `${num(k.ms)} (${times(k.speedup_vs_full ?? null)})`) : '—';
    })])));
  }
  if (r.e2e.length) {
    out.push('', `End to end (${layersText(m.layers)}; prefill chunk ${r.settings.prefill_chunk}; prefill m = measured, e = estimated from the first and last chunk; decode = median of ${r.settings.decode_tokens} tokens after ${r.settings.warmup_tokens} warm-up, each DuoAttention token interleaved with one of full attention)`);
    out.push(table(['config', 'KV', 'context', 'prefill ms', '× full', 'decode ms/tok', '× full', 'ideal ×', 'KV total', 'KV GPU', 'KV CPU'],
      r.e2e.map((e) => e.error
        ? [e.label, e.kv_dtype, String(e.context), 'error ↓', '', '', '', '', '', '', '']
        : [e.label, e.kv_dtype, String(e.context), `${num(e.prefill_ms)} ${e.prefill_method === 'estimated' ? 'e' : 'm'}`, times(e.prefill_speedup),
          num(e.decode_ms_per_token), times(e.decode_speedup), times(e.ideal_decode_speedup),
          e.kv ? formatBytes(e.kv.total) : '—', e.kv ? formatBytes(e.kv.gpu) : '—', e.kv ? formatBytes(e.kv.cpu) : '—']), 2));
    for (const e of r.e2e) if (e.error) out.push(`  error: ${e.label} (KV ${e.kv_dtype}) at ${e.context}: ${e.error}`);
  }
  if (r.memory.length) {
    out.push('', 'KV memory: runtime (session.kvMemory) vs projection (duet memory --kv-dtype KV; rings are f32); WASM = CPU backend memory in use; RSS = this process');
    out.push(table(['config', 'KV', 'context', 'GPU', 'CPU', 'projected GPU', 'projected CPU', 'match', 'full attn', 'WASM', 'peak RSS'],
      r.memory.map((x) => [x.label, x.kv_dtype, String(x.context), formatBytes(x.measured.gpu), formatBytes(x.measured.cpu), formatBytes(x.projected.gpu),
        formatBytes(x.projected.cpu), x.error ? `error: ${x.error.slice(0, 40)}` : x.matches ? 'yes' : 'no', formatBytes(x.projected.full),
        formatBytes(x.wasm_bytes), formatBytes(x.peak_rss_bytes)]), 2));
  }
  if (r.crossovers.length) {
    out.push('', `Where DuoAttention decodes ${r.crossovers[0].target}× faster than full attention (context, tokens)`);
    const cut = m.layers < m.layers_total;
    out.push(table(['config', 'KV', 'measured', 'fitted', `bytes (${layersText(m.layers)})`, ...(cut ? [`bytes (${m.layers_total} layers)`] : [])],
      r.crossovers.map((c) => [c.label, c.kv_dtype, c.measured_context === null ? 'not reached' : String(c.measured_context), num(c.fitted_context), num(c.bytes_context),
        ...(cut ? [num(c.bytes_context_all_layers)] : [])]), 2));
    for (const why of new Set(r.crossovers.map((c) => c.why))) out.push(`  ${why}`);
    for (const c of r.crossovers) if (c.fit) out.push(`  fit: ${c.fit}`);
  }
  if (r.auto_placement?.length) {
    out.push('', "Placement 'auto' against the measured split and gpu decode (ms per token)");
    out.push(table(['sparsity', 'auto chose', 'context', 'split', 'gpu', 'faster', 'right?'],
      r.auto_placement.flatMap((a) => a.measured.map((x) => [String(a.sparsity), a.choice, String(x.context), num(x.split_decode_ms), num(x.gpu_decode_ms), x.faster, x.chosen_was_faster ? 'yes' : 'no']))));
    for (const a of r.auto_placement) out.push(`  duo@${a.sparsity}: ${a.reason}`);
  }
  return `${out.join('\n')}\n`;
}

/** A row's line in the plots: its configuration, and its KV dtype when the run compared several. */
function lineOf(label: string, kvDtype: string, r: BenchResults): string {
  return r.settings.kv_dtypes.length > 1 ? `${label} KV ${kvDtype}` : label;
}

function series(r: BenchResults, rows: E2eRow[], value: (e: E2eRow) => number | null): Series[] {
  const labels = [...new Set(rows.map((e) => lineOf(e.label, e.kv_dtype, r)))];
  return labels.map((label) => ({
    label,
    points: rows.filter((e) => lineOf(e.label, e.kv_dtype, r) === label && value(e) !== null).map((e) => [e.context, value(e)!] as [number, number]),
  })).filter((s) => s.points.length > 0);
}

/** The plots as [file name, SVG text]. */
export function renderPlots(r: BenchResults): Array<[string, string]> {
  const plots: Array<[string, string]> = [];
  const where = `${r.model.source.replace(/^shape:/, '')}, ${layersText(r.model.layers)}`;
  const decode = series(r, r.e2e, (e) => e.decode_ms_per_token);
  if (decode.length) {
    plots.push(['decode-ms-vs-context.svg', lineChart(decode, { title: `Decode ms/token (${where})`, xLabel: 'context (tokens)', yLabel: 'ms per token', logX: true })]);
  }
  const duo = r.e2e.filter((e) => e.heads === 'duo');
  const speedup = [
    ...series(r, duo, (e) => e.decode_speedup),
    ...series(r, duo.filter((e) => e.placement === duo[0]?.placement), (e) => e.ideal_decode_speedup)
      .map((s) => ({ ...s, label: `${s.label.replace(/\/\S+/, '')} ideal (bytes)` })),
  ];
  if (speedup.length) {
    plots.push(['decode-speedup-vs-context.svg', lineChart(speedup, { title: `Decode speedup vs full attention (${where})`, xLabel: 'context (tokens)', yLabel: '× full attention (interleaved runs)', logX: true })]);
  }
  const prefill = series(r, r.e2e, (e) => e.prefill_ms);
  if (prefill.length) {
    plots.push(['prefill-ms-vs-context.svg', lineChart(prefill, { title: `Prefill ms (${where})`, xLabel: 'context (tokens)', yLabel: 'ms', logX: true })]);
  }
  // KV memory: one line per head configuration (the placement moves bytes between devices, not the total).
  const mem = r.memory.length
    ? r.memory.filter((x) => !x.error).map((x) => ({ label: lineOf(x.label.split('/')[0], x.kv_dtype, r), context: x.context, bytes: x.measured.total }))
    : r.e2e.filter((e) => e.kv).map((e) => ({ label: lineOf(e.label.split('/')[0], e.kv_dtype, r), context: e.context, bytes: e.kv!.total }));
  const memLabels = [...new Set(mem.map((x) => x.label))];
  const memSeries: Series[] = memLabels.map((label) => {
    const byCtx = new Map<number, number>();
    for (const x of mem) if (x.label === label) byCtx.set(x.context, x.bytes / 2 ** 20);
    return { label, points: [...byCtx.entries()] };
  }).filter((s) => s.points.length > 0);
  if (memSeries.length) {
    plots.push(['memory-vs-context.svg', lineChart(memSeries, { title: `KV cache, ${r.settings.kv_dtypes.join(' / ')} (${where})`, xLabel: 'context (tokens)', yLabel: 'MiB', logX: true })]);
  }
  return plots;
}

/** Writes results.json and the plots into `dir`; returns the files written. */
export function writeReport(r: BenchResults, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const plots = renderPlots(r);
  r.plots = plots.map(([name]) => name);
  for (const [name, svg] of plots) writeFileAtomic(join(dir, name), `${svg}\n`);
  const json = join(dir, 'results.json');
  writeFileAtomic(json, `${JSON.stringify(r, null, 1)}\n`);
  return [json, ...plots.map(([name]) => join(dir, name))];
}
