// Errors of the public API. `field` names the option or request field that was wrong, in API terms
// (maxTokens, temperature, device, …), so each user maps it to its own words: the CLI to its flags,
// the server to OpenAI's parameter names.

export type DuetErrorCode =
  /** A value out of range or of the wrong type. */
  | 'invalid_value'
  /** The prompt (with the tokens to generate) does not fit the context. */
  | 'context_length_exceeded'
  /** A request names a model this one is not. */
  | 'model_not_found'
  /** Something needed is missing: a GPU adapter, a tokenizer, a chat template. */
  | 'unavailable';

export class DuetError extends Error {
  constructor(
    /** The option or field at fault, or null when no single one is. */
    readonly field: string | null,
    /** The message without the field name. */
    readonly detail: string,
    readonly code: DuetErrorCode = 'invalid_value',
  ) {
    super(field ? `${field} ${detail}` : detail);
    this.name = 'DuetError';
  }
}
