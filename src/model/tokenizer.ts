// tokenizer.json through @huggingface/tokenizers; the chat template through @huggingface/jinja.
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export interface ChatMessage { role: string; content: string }

/** Emits only the newly decoded text per token, holding back incomplete characters. */
export class StreamDecoder {
  private ids: number[] = [];
  private emitted = '';
  constructor(private readonly tok: TextTokenizer) {}
  push(id: number): string {
    this.ids.push(id);
    const text = this.tok.decode(this.ids);
    // A trailing U+FFFD is usually a multi-byte character still being formed: wait for more.
    if (text.endsWith('\uFFFD') || !text.startsWith(this.emitted)) return '';
    const fresh = text.slice(this.emitted.length);
    this.emitted = text;
    return fresh;
  }
  /** Whatever is left at the end. */
  flush(): string {
    const text = this.tok.decode(this.ids);
    const rest = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : '';
    this.emitted = text;
    return rest;
  }
}

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  /** The chat template's source; compiled on first use, so a broken one fails only with --chat. */
  private readonly templateSource: string | null;
  private template: Template | null = null;
  constructor(tokenizerJson: object, private readonly tokenizerConfig: Record<string, unknown>) {
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    const t = tokenizerConfig.chat_template;
    const named = Array.isArray(t) ? t.find((x: unknown) => (x as { name?: unknown } | null)?.name === 'default') as { template?: unknown } | undefined : undefined;
    const source = typeof t === 'string' ? t : typeof named?.template === 'string' ? named.template : null;
    this.templateSource = source;
  }

  get hasChatTemplate(): boolean { return this.template !== null; }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  streamDecoder(): StreamDecoder { return new StreamDecoder(this); }

  applyChatTemplate(messages: ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    if (this.templateSource === null) throw new Error('tokenizer_config.json has no chat_template; drop --chat');
    if (!this.template) {
      try { this.template = new Template(this.templateSource); } catch (e) {
        throw new Error(`tokenizer_config.json: field "chat_template" is not a valid Jinja template (${(e as Error).message})`);
      }
    }
    const special = (key: string) => {
      const v = this.tokenizerConfig[key];
      return typeof v === 'string' ? v : (v as { content?: string } | undefined)?.content ?? '';
    };
    try {
      return this.template.render({
        messages, add_generation_prompt: options.addGenerationPrompt ?? true,
        bos_token: special('bos_token'), eos_token: special('eos_token'),
      });
    } catch (e) {
      throw new Error(`tokenizer_config.json: field "chat_template" failed to render (${(e as Error).message})`);
    }
  }
}
