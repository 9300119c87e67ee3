// The model card (README.md) of a converted checkpoint: what `duet dha` did, per layer which heads
// were merged, the token budget and the losses.
import { groupsText } from './allocate.js';
import type { ConvertReport } from './convert.js';

const f = (x: number | null) => (x === null ? '–' : x.toFixed(4));

export function modelCard(r: ConvertReport, o: { source: string; headDim: number; command: string }): string {
  const perToken = (heads: number) => heads * o.headDim * 4;
  const method = {
    dha: 'DHA (decoupled-head attention): head similarity on task data, an adaptive per-layer allocation of key and value heads, fusion training of the grouped heads (identity-initialised linear fusion weights, a constraint pulling each group together with growing multipliers), the collapse to one head per group, then continued training',
    'gqa-meanpool': 'the GQA baseline: contiguous equal groups of key and value heads mean-pooled in every layer, then continued training',
    continued: 'the continued-training reference: every head kept, the source trained on the same tokens as the conversions',
  }[r.method];
  const title = { dha: 'DHA', 'gqa-meanpool': 'GQA (mean-pool)', continued: 'Continued training (all heads kept)' }[r.method];
  const lines = [
    `# ${title} conversion of ${o.source}`,
    '',
    `Made by \`${o.command}\` with ${method}. See docs/dha.md in Duet for the method and its formulas.`,
    '',
    `- KV budget ${r.budget}: ${r.keptHeads} of ${r.totalHeads} key + value heads kept, ${perToken(r.keptHeads)} KV bytes per token in f32 (the source: ${perToken(r.totalHeads)}).`,
    `- Training: ${r.tokens.fusion + r.tokens.train} tokens (${r.steps.fusion} fusion steps, ${r.tokens.fusion} tokens; ${r.steps.train} continued-training steps, ${r.tokens.train} tokens); the head similarity read ${r.tokens.similarity} tokens. ${r.seconds.toFixed(0)} s.`,
    r.method === 'continued'
      ? '- config.json is a plain multi-head Llama config (no `duet_dha`): every head was kept.'
      : '- config.json carries the layout under `duet_dha` (per layer the key and value head counts and each query head\'s key and value head); k_proj holds key_heads·head_dim rows and v_proj value_heads·head_dim rows.',
    '- dha.json holds the full report: `curve` (validation loss against training tokens) and `history` (every step\'s training loss against training tokens); `duet dha plot` draws the arms\' curves.',
    '',
    '## Heads per layer',
    '',
    'Groups list the source heads that became one head; the collapse cost is the output error of replacing each group by its mean at the source weights, in units of the layer side\'s average head (measured on task data).',
    '',
    '| layer | key heads | key groups | value heads | value groups | collapse cost K | collapse cost V |',
    '|---|---|---|---|---|---|---|',
    ...r.groups.map((g, l) => `| ${l} | ${g.key.length} | ${groupsText(g.key)} | ${g.value.length} | ${groupsText(g.value)} | ${r.collapseCost[l].key.toFixed(3)} | ${r.collapseCost[l].value.toFixed(3)} |`),
    '',
  ];
  if (r.constraintsAtCollapse) {
    lines.push(`Fusion constraint c per layer at the collapse (K / V): ${r.constraintsAtCollapse.map((c, l) => `${l}: ${c.key.toFixed(4)} / ${c.value.toFixed(4)}`).join(', ')}.`, '');
  }
  lines.push(
    `## Losses (validation: ${r.tokens.validation} tokens of fixed task sequences, the training loss's weighting)`,
    '',
    '| source | fusion step 0 | fused (before the collapse) | after the conversion | after training |',
    '|---|---|---|---|---|',
    `| ${f(r.losses.original)} | ${f(r.losses.fusionStart)} | ${f(r.losses.fused)} | ${f(r.losses.converted)} | ${f(r.losses.final)} |`,
    '',
    '| stage | step | training tokens | validation loss | constraint c (mean over merged sides) |',
    '|---|---|---|---|---|',
    ...r.curve.map((p) => `| ${p.stage} | ${p.step} | ${p.tokens} | ${p.validationLoss.toFixed(4)} | ${p.constraint === undefined ? '–' : p.constraint.toFixed(4)} |`),
    '',
    'An interrupted conversion continues where it was saved with the same command and `--resume` (the state is saved every `--save-every` steps in dha-state/, removed once the model is written) and ends with the same weights and report.',
    '',
  );
  return lines.join('\n');
}
