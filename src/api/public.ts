// What both entries export: the model object, its option and result types, the OpenAI shapes,
// errors, and the pattern helpers.
export { DuetModel, Generation } from './model.js';
export type {
  ChatMessage, DeviceChoice, Environment, FinishReason, GenerateOptions, GenerationStats, KvStats, ModelInfo,
  ModelOptions, Placement, ProgressEvent, Prompt, StreamingWindow, TokenDelta,
} from './model.js';
export type {
  ChatCompletion, ChatCompletionChunk, ChatCompletionParams, ChatCompletions, Completion, CompletionParams, Completions,
  OpenAIFinish, RequestOptions, Usage,
} from './openai.js';
export { DuetError, type DuetErrorCode } from '../errors.js';
export { binarize, parsePattern, type HeadKinds, type HeadPattern, type PatternFiles } from '../attention/pattern.js';
export type { ModelFiles } from '../model/files.js';
export type { ModelConfig } from '../model/config.js';
