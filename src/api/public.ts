// What both entries export: the model object, its option and result types, the OpenAI shapes,
// errors, and the pattern helpers.
export { DuetModel, Generation, meanSampledFraction } from './model.js';
export type {
  ChatMessage, DeviceChoice, HeadSettings, Environment, FinishReason, GenerateOptions, GenerationStats, KvStats, ModelInfo,
  ModelOptions, OffloadOptions, PerplexityResult, Placement, PlacementCalibration, PlacementChoice, ProgressEvent, Prompt, StreamingWindow, TokenDelta,
} from './model.js';
export type {
  ChatCompletion, ChatCompletionChunk, ChatCompletionParams, ChatCompletions, Completion, CompletionParams, Completions,
  OpenAIFinish, RequestOptions, Usage,
} from './openai.js';
export { DuetError, type DuetErrorCode } from '../errors.js';
export type { GpuCounters, PerTokenCounters } from '../gpu/context.js';
export { allHeads, binarize, countStreaming, loadPattern, parsePattern, type HeadKinds, type HeadPattern, type PatternFiles } from '../attention/pattern.js';
export { formatHeadMethods, loadHeadMethods, METHODS_FILE, parseHeadMethods } from '../attention/pattern.js';
export type { HeadMethods } from '../kv/registry.js';
// Tools programs around a model need: KV projections, the long-context tasks and their scoring, heatmaps.
export { formatBytes, projectKvMemory, type MemoryProjection } from '../attention/memory.js';
export { kvMemory, largestContext, type ContextFit, type KvMemory, type KvMemoryOptions } from './memory.js';
export { KV_DTYPES, type KvDType } from '../backend/kv-dtype.js';
export { parseModelConfig } from '../model/config.js';
export { fillerStyleFor, taskPrompt } from '../eval/evaluate.js';
export {
  comparisonConfigs, evaluate, type ComparisonOptions, type EvalConfig, type EvalConfigSummary, type EvalRow, type EvalSample, type PerplexityRow,
  type EvaluateOptions, type EvaluationResult,
} from './evaluate.js';
export type { HeadOptions, LocretOptions } from './heads.js';
export { IDENTIFY_METHODS, type HeadIdentification, type IdentifyMethod, type IdentifyOptions } from './identify.js';
export type { TrainingDevice } from './device.js';
export { bundledPlan, trainingPlan, type PlanOptions } from '../train/plan.js';
export type { Phase, StepReport, TrainPlan } from '../train/trainer.js';
export type { TrainConfig } from '../train/model.js';
export { score } from '../eval/score.js';
export { TASK_KINDS, type TaskKind, type TaskSample } from '../tasks/tasks.js';
export { heatmap } from '../plot/svg.js';
export type { TextTokenizer } from '../model/tokenizer.js';
export type { ModelFiles } from '../model/files.js';
export type { ModelConfig } from '../model/config.js';
