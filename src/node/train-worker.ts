// A training replica in a worker thread: builds the same model as the main thread, then for each
// request loads the parameters it is sent and returns the gradients of its share of the step.
import { parentPort, workerData } from 'node:worker_threads';
import { Trainer, type TrainPlan } from '../train/trainer.js';

const trainer = await Trainer.create(workerData.plan as TrainPlan);
parentPort!.on('message', (msg: { params: Float32Array; step: number; indices: number[] }) => {
  trainer.model.params.set(msg.params);
  trainer.model.grads.fill(0);
  const seqs = trainer.sequencesFor(msg.step);
  const loss = trainer.accumulate(seqs, msg.indices);
  const grads = Float32Array.from(trainer.model.grads);
  parentPort!.postMessage({ grads, loss }, [grads.buffer]);
});
parentPort!.postMessage({ ready: true });
