import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ringSlot } from '../src/backend/contract.ts';

test('ringSlot maps sinks to themselves and the rest into the recent ring', () => {
  assert.is(ringSlot(3, { sink: 4, recent: 16 }), 3);
  assert.is(ringSlot(4, { sink: 4, recent: 16 }), 4);
  assert.is(ringSlot(20, { sink: 4, recent: 16 }), 4);
});
test.run();
