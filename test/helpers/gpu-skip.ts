// GPU tests without a WebGPU adapter: outside CI they are registered as skipped (uvu counts and
// prints them as skipped, so a run without a GPU cannot look like a pass); in CI, where a (software)
// adapter is required, each becomes a failing test.
import type { Test } from 'uvu';
import * as assert from 'uvu/assert';

type Fn = Parameters<Test>[1];

const warned = new Set<string>();

/** `t`, or a registrar that skips (fails in CI) every test when no adapter exists. */
export function gpuTests(t: Test, available: boolean, reason: string): (name: string, fn: Fn) => void {
  return (name, fn) => {
    if (available) { t(name, fn); return; }
    if (process.env.CI) { t(name, () => assert.unreachable(`no WebGPU adapter in CI: ${reason}`)); return; }
    if (!warned.has(reason)) { warned.add(reason); console.warn(`[skip] GPU tests: no WebGPU adapter (${reason})`); }
    t.skip(`${name} (skipped: no WebGPU adapter)`, fn);
  };
}
