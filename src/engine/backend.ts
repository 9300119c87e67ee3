// The Backend contract moved to src/backend/contract.ts (below the engine, so the backends need not
// import from it). This re-export keeps code written against the old path compiling; import the new one.
export * from '../backend/contract.js';
