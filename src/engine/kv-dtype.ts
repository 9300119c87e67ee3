// The user-facing side of the KV cache dtypes: checking an option.
// The storage format itself (types, row layout, reference codec) is the backends' (src/backend/kv-dtype.ts).
import { DuetError } from '../errors.js';
import { KV_DTYPES, isKvDType, type KvDType } from '../backend/kv-dtype.js';

/** Checks a user's kvDtype (undefined: f32), naming `field` when it is not one of the types. */
export function kvDTypeOption(value: unknown, field = 'kvDtype'): KvDType {
  if (value === undefined) return 'f32';
  if (!isKvDType(value)) throw new DuetError(field, `must be one of ${KV_DTYPES.join(', ')} (got ${JSON.stringify(value)})`);
  return value;
}
