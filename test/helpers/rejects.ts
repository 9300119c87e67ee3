// uvu/assert has no async throws: awaits `p` and checks that it rejects with a message matching `re`.
import * as assert from 'uvu/assert';

export async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  try { await p; } catch (e) { assert.match((e as Error).message, re); return; }
  assert.unreachable(`expected an error matching ${re}`);
}
