// File access for a model directory, so core code runs in Node (fs) and browsers (HTTP, picked files).
export interface ModelFiles {
  /** Display name of the directory (for error messages). */
  readonly name: string;
  /** Set when the model is one GGUF file: its path for the methods below (no config.json then). */
  readonly gguf?: string;
  exists(path: string): Promise<boolean>;
  /** Size in bytes. */
  size(path: string): Promise<number>;
  readText(path: string): Promise<string>;
  /** Reads `length` bytes at `offset`; throws if the file is shorter. */
  readBytes(path: string, offset: number, length: number): Promise<Uint8Array>;
}

/** Parses a JSON file, naming the file in the error. */
export async function readJson(files: ModelFiles, path: string): Promise<unknown> {
  const text = await files.readText(path);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message})`);
  }
}
