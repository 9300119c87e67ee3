// The heatmap's layout: room on the left for the longest row name, column names shrunk to their cells.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { heatmap } from '../src/plot/svg.ts';

const attr = (svg: string, re: RegExp): number[] => [...svg.matchAll(re)].map((m) => Number(m[1]));

test('long row names move the grid right so they fit; short ones keep the 80 px margin', () => {
  const values = [[0.1, 0.9], [0.5, 1]];
  const short = heatmap(values, { title: 't', rowLabel: 'r', colLabel: 'c', rowNames: ['a', 'b'] });
  assert.equal(attr(short, /<rect x="(\d+)" y="50" width/g).slice(0, 1), [80]);
  const name = 'duo@0.75 + locret 80/64 on its streaming heads';
  const long = heatmap(values, { title: 't', rowLabel: 'r', colLabel: 'c', rowNames: [name, 'b'] });
  const x0 = attr(long, /<rect x="(\d+)" y="50" width/g)[0];
  assert.is(x0, 24 + Math.ceil(6 * name.length), 'left margin from the longest name');
  // Its label ends 6 px left of the grid and starts right of the axis title (x = 14).
  assert.ok(x0 - 6 - 6 * name.length >= 14);
});

test('column names longer than a cell get a smaller font; short ones the default', () => {
  const values = [Array.from({ length: 9 }, (_, i) => i / 8)];
  const svg = heatmap(values, { title: 't', rowLabel: 'r', colLabel: 'c', colNames: values[0].map((_, i) => `multikey ${i}`) });
  const sizes = attr(svg, /text-anchor="middle" font-size="(\d+)">multikey/g);
  assert.is(sizes.length, 9);
  // 48 px cells, 10 characters: floor(46 / 6) = 7 px.
  assert.ok(sizes.every((f) => f === 7), String(sizes));
  const plain = heatmap(values, { title: 't', rowLabel: 'r', colLabel: 'c', colNames: values[0].map((_, i) => `${i}`) });
  assert.not.match(plain, /font-size="\d+">0</);
});

test.run();
