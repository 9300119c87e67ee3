// A random DHA checkpoint on disk: a multi-head checkpoint (writeCheckpoint) whose k_proj / v_proj
// keep key_heads·head_dim / value_heads·head_dim rows per layer, with config.json's duet_dha.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dhaConfigJson, DHA_KEY, type DhaConfig } from '../../src/dha/config.ts';
import { rewriteTensors, writeCheckpoint, type CheckpointSpec } from './checkpoint.ts';

export async function writeDhaCheckpoint(dir: string, spec: Partial<CheckpointSpec> & { heads: number; hidden: number }, dha: DhaConfig): Promise<void> {
  const s = await writeCheckpoint(dir, { ...spec, kvHeads: spec.heads, layers: dha.layers.length });
  const D = s.headDim ?? s.hidden / s.heads;
  await rewriteTensors(dir, (t) => {
    dha.layers.forEach((layer, l) => {
      for (const [name, heads] of [['k_proj', layer.keyHeads], ['v_proj', layer.valueHeads]] as const) {
        for (const part of ['weight', 'bias']) {
          const x = t[`model.layers.${l}.self_attn.${name}.${part}`];
          if (!x) continue;
          x.data = (x.data as Float32Array).slice(0, heads * D * (part === 'weight' ? s.hidden : 1));
          x.shape = part === 'weight' ? [heads * D, s.hidden] : [heads * D];
        }
      }
    });
  });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, [DHA_KEY]: dhaConfigJson(dha) }, null, 2));
}
