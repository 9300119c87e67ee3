#!/usr/bin/env node
// Entry point of the `duet` command (built by `npm run build` into dist/cli.js).
import { main } from '../dist/cli.js';

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; setImmediate(() => process.exit(code)); },
  (err) => {
    process.stderr.write(`duet: error: ${err instanceof Error ? err.message : String(err)}\n`);
    if (process.env.DUET_DEBUG) console.error(err);
    process.exit(1);
  },
);
