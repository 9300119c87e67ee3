// The bundled model's character vocabulary and its tokenizer.json (a BPE model with single
// characters and no merges, read by @huggingface/tokenizers like any other checkpoint's).
export const BOS = 0;
export const EOS = 1;
export const CHARS = [' ', ...'abcdefghijklmnopqrstuvwxyz0123456789', '.', ',', '?', ':', '=', '\n'];
export const VOCAB_SIZE = 2 + CHARS.length;

const ID = new Map(CHARS.map((c, i) => [c, 2 + i]));

/** Character ids of text (no BOS); a character outside the vocabulary is an error. */
export function encodeChars(text: string): number[] {
  return Array.from(text, (c) => {
    const id = ID.get(c);
    if (id === undefined) throw new Error(`character ${JSON.stringify(c)} is not in the bundled model's vocabulary`);
    return id;
  });
}

export function tokenizerFiles(): { tokenizer: object; tokenizerConfig: object } {
  const vocab: Record<string, number> = { '<s>': BOS, '</s>': EOS };
  CHARS.forEach((c, i) => { vocab[c] = 2 + i; });
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    tokenizer: {
      version: '1.0', truncation: null, padding: null,
      added_tokens: [special(BOS, '<s>'), special(EOS, '</s>')],
      normalizer: null, pre_tokenizer: null,
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { '<s>': { id: '<s>', ids: [BOS], tokens: ['<s>'] } },
      },
      decoder: { type: 'Fuse' },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
    },
    tokenizerConfig: { bos_token: '<s>', eos_token: '</s>', add_bos_token: true, tokenizer_class: 'PreTrainedTokenizerFast', model_max_length: 4096 },
  };
}
