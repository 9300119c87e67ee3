// Dependency-free SVG plots: line charts (benchmarks) and heatmaps (head patterns, accuracy grids).

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const step0 = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e3) return `${(v / 1e3).toPrecision(3)}K`;
  return Number(v.toPrecision(3)).toString();
}

export interface Series { label: string; points: Array<[number, number]> }

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Logarithmic x axis (base 2), e.g. context lengths. */
  logX?: boolean;
  width?: number;
  height?: number;
  /** Horizontal reference lines (dashed, labelled), e.g. a target loss; they count in the y range. */
  hLines?: Array<{ y: number; label: string }>;
}

export function lineChart(series: Series[], o: LineChartOptions): string {
  // The legend's column widens for long labels (about 6.5 px a character at 12 px), and the chart with it.
  const longest = Math.max(0, ...series.map((s) => s.label.length), ...(o.hLines ?? []).map((h) => h.label.length));
  const R = Math.max(200, 40 + Math.ceil(6.5 * longest));
  const W = (o.width ?? 720) + R - 200, H = o.height ?? 420, L = 70, T = 40, B = 50;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = [...series.flatMap((s) => s.points.map((p) => p[1])), ...(o.hLines ?? []).map((h) => h.y)];
  const tx = (x: number) => (o.logX ? Math.log2(x) : x);
  const xMin = Math.min(...xs.map(tx)), xMax = Math.max(...xs.map(tx));
  const yMax = Math.max(...ys, 0) * 1.05 || 1, yMin = 0;
  const px = (x: number) => L + ((tx(x) - xMin) / (xMax - xMin || 1)) * (W - L - R);
  const py = (y: number) => H - B - ((y - yMin) / (yMax - yMin)) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`);
  for (const t of niceTicks(yMin, yMax)) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${py(t)}" y2="${py(t)}" stroke="#ddd"/><text x="${L - 6}" y="${py(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  const xTicks = o.logX ? [...new Set(xs)].sort((a, b) => a - b) : niceTicks(xMin, xMax);
  for (const t of xTicks) parts.push(`<text x="${px(t)}" y="${H - B + 18}" text-anchor="middle">${fmt(t)}</text>`);
  parts.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="black"/><line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="black"/>`);
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  // Reference lines are labelled in the legend, below the series, where no curve can hide them.
  (o.hLines ?? []).forEach((h, i) => {
    const ly = T + (series.length + i) * 18 + 6;
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${py(h.y).toFixed(1)}" y2="${py(h.y).toFixed(1)}" stroke="#555" stroke-dasharray="6 4"/>`);
    parts.push(`<line x1="${W - R + 10}" x2="${W - R + 26}" y1="${ly}" y2="${ly}" stroke="#555" stroke-dasharray="6 4"/><text x="${W - R + 30}" y="${ly + 4}">${esc(h.label)}</text>`);
  });
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of pts) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>`);
    parts.push(`<rect x="${W - R + 12}" y="${T + i * 18}" width="12" height="12" fill="${color}"/><text x="${W - R + 30}" y="${T + i * 18 + 10}">${esc(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

export interface HeatmapOptions {
  title: string;
  rowLabel: string;
  colLabel: string;
  rowNames?: string[];
  colNames?: string[];
  /** Value range of the colour scale (default [0, 1]). */
  min?: number;
  max?: number;
  /** Print each cell's value. */
  annotate?: boolean;
}

/** White (min) to dark blue (max). */
function colour(t: number): string {
  const c = Math.max(0, Math.min(1, t));
  const r = Math.round(247 - c * (247 - 8)), g = Math.round(251 - c * (251 - 48)), b = Math.round(255 - c * (255 - 107));
  return `rgb(${r},${g},${b})`;
}

export function heatmap(values: number[][], o: HeatmapOptions): string {
  const rows = values.length, cols = Math.max(...values.map((r) => r.length));
  const cell = Math.max(14, Math.min(48, Math.floor(640 / Math.max(cols, 1))));
  // Room for the longest row name (about 6 px a character at 11 px), and column names shrunk to fit a cell.
  const longest = (names: string[] | undefined) => Math.max(0, ...(names ?? []).map((n) => n.length));
  const L = Math.max(80, 24 + Math.ceil(6 * longest(o.rowNames))), T = 50, W = L + cols * cell + 90, H = T + rows * cell + 50;
  const colFont = Math.max(7, Math.min(11, Math.floor((cell - 2) / (0.6 * Math.max(1, longest(o.colNames))))));
  const min = o.min ?? 0, max = o.max ?? 1;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(o.title)}</text>`);
  values.forEach((row, r) => {
    parts.push(`<text x="${L - 6}" y="${T + r * cell + cell / 2 + 4}" text-anchor="end">${esc(o.rowNames?.[r] ?? String(r))}</text>`);
    row.forEach((v, c) => {
      const t = (v - min) / (max - min || 1);
      parts.push(`<rect x="${L + c * cell}" y="${T + r * cell}" width="${cell}" height="${cell}" fill="${colour(t)}" stroke="#fff"><title>${esc(`${o.rowNames?.[r] ?? r}, ${o.colNames?.[c] ?? c}: ${v}`)}</title></rect>`);
      if (o.annotate && cell >= 24) {
        parts.push(`<text x="${L + c * cell + cell / 2}" y="${T + r * cell + cell / 2 + 4}" text-anchor="middle" fill="${t > 0.5 ? 'white' : 'black'}" font-size="9">${fmt(v)}</text>`);
      }
    });
  });
  for (let c = 0; c < cols; c++) {
    if (cols <= 32 || c % Math.ceil(cols / 32) === 0) {
      parts.push(`<text x="${L + c * cell + cell / 2}" y="${T + rows * cell + 14}" text-anchor="middle"${colFont < 11 ? ` font-size="${colFont}"` : ''}>${esc(o.colNames?.[c] ?? String(c))}</text>`);
    }
  }
  parts.push(`<text x="${L + (cols * cell) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.colLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${T + (rows * cell) / 2}) rotate(-90)" text-anchor="middle">${esc(o.rowLabel)}</text>`);
  const lx = L + cols * cell + 20;
  for (let i = 0; i <= 10; i++) parts.push(`<rect x="${lx}" y="${T + (10 - i) * 12}" width="14" height="12" fill="${colour(i / 10)}"/>`);
  parts.push(`<text x="${lx + 18}" y="${T + 10}">${fmt(max)}</text><text x="${lx + 18}" y="${T + 130}">${fmt(min)}</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}
