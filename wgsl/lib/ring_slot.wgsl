// A streaming cache's ring slot of position j (src/backend/contract.ts): j for the sinks, else
// sink + (j − sink) mod recent.
fn ring_slot(j: u32, sink: u32, recent: u32) -> u32 {
  if (j < sink) { return j; }
  return sink + (j - sink) % recent;
}
