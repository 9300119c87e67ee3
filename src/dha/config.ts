// Decoupled-head attention (DHA) layout in config.json: per layer, how many key heads and value
// heads it keeps and which of them each query head reads. Stored under the key `duet_dha`, which
// plain Llama checkpoints never have:
//   "duet_dha": { "format": 1, "layers": [
//     { "key_heads": 2, "value_heads": 1, "query_to_key": [0, 0, 1, 1], "query_to_value": [0, 0, 0, 0] }, … ] }
// Layer l's k_proj then has key_heads·head_dim rows and v_proj value_heads·head_dim rows;
// num_key_value_heads stays num_attention_heads (the nominal MHA shape). GQA is the special case
// of equal counts with contiguous maps.

export interface DhaLayer { keyHeads: number; valueHeads: number; queryToKey: number[]; queryToValue: number[] }
export interface DhaConfig { layers: DhaLayer[] }

export const DHA_KEY = 'duet_dha';
export const DHA_FORMAT = 1;

/** Whether a parsed config.json object carries a DHA layout. */
export function hasDha(json: unknown): boolean {
  return typeof json === 'object' && json !== null && !Array.isArray(json) && DHA_KEY in json;
}

/** Validates the `duet_dha` object for a model of `layers` layers and `heads` query heads. */
export function parseDhaConfig(value: unknown, layers: number, heads: number, file = 'config.json'): DhaConfig {
  const fail = (field: string, why: string): never => { throw new Error(`${file}: field "${DHA_KEY}${field}" ${why}`); };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('', 'must be an object');
  const o = value as Record<string, unknown>;
  if (o.format !== DHA_FORMAT) fail('.format', `must be ${DHA_FORMAT} (got ${JSON.stringify(o.format)})`);
  if (!Array.isArray(o.layers)) return fail('.layers', 'must be an array');
  if (o.layers.length !== layers) fail('.layers', `has ${o.layers.length} entries, the model has ${layers} layers (num_hidden_layers)`);
  return {
    layers: o.layers.map((entry: unknown, l): DhaLayer => {
      const at = `.layers[${l}]`;
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return fail(at, 'must be an object');
      const e = entry as Record<string, unknown>;
      const count = (f: string): number => {
        const v = e[f];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > heads) return fail(`${at}.${f}`, `must be an integer from 1 to ${heads} (num_attention_heads) (got ${JSON.stringify(v)})`);
        return v;
      };
      const map = (f: string, n: number): number[] => {
        const v = e[f];
        if (!Array.isArray(v) || v.length !== heads) return fail(`${at}.${f}`, `must be an array of ${heads} head indices (one per query head)`);
        v.forEach((x, h) => { if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= n) fail(`${at}.${f}[${h}]`, `must be an integer from 0 to ${n - 1} (got ${JSON.stringify(x)})`); });
        for (let g = 0; g < n; g++) if (!v.includes(g)) fail(`${at}.${f}`, `never uses head ${g} of ${n} (every kept head must be read by a query head)`);
        return v as number[];
      };
      const keyHeads = count('key_heads'), valueHeads = count('value_heads');
      return { keyHeads, valueHeads, queryToKey: map('query_to_key', keyHeads), queryToValue: map('query_to_value', valueHeads) };
    }),
  };
}

/** The `duet_dha` object for config.json. */
export function dhaConfigJson(c: DhaConfig): object {
  return {
    format: DHA_FORMAT,
    layers: c.layers.map((l) => ({ key_heads: l.keyHeads, value_heads: l.valueHeads, query_to_key: l.queryToKey, query_to_value: l.queryToValue })),
  };
}

/** KV-cache heads per token: Σ_l (key heads + value heads). */
export function dhaCacheHeads(c: DhaConfig): number {
  return c.layers.reduce((a, l) => a + l.keyHeads + l.valueHeads, 0);
}
