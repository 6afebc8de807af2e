/**
 * Subscriptions as async iterators: catch-up then live, from now, and a resume after the stream
 * is cut that delivers every event once, in order, with no gap.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, type Event, type Subscription } from "../src/index.js";
import { Proxy } from "./proxy.js";
import { connect, newScope, serverAddress, unique } from "./support.js";

/** A test that has not finished by then fails instead of hanging. */
const TEST_TIMEOUT_MS = 30_000;

const client = connect();
after(() => client.close());

/** The next `n` events of `subscription`, read through one iterator that stays open. */
async function take(iterator: AsyncIterator<Event>, n: number): Promise<Event[]> {
  const events: Event[] = [];
  while (events.length < n) {
    const next = await iterator.next();
    assert.ok(!next.done, `the subscription ended after ${events.length} events`);
    events.push(next.value);
  }
  return events;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let attempt = 0; attempt < 200 && !condition(); attempt += 1) {
    await sleep(50);
  }
  assert.ok(condition(), what);
}

test("subscribe catches up, then follows", { timeout: TEST_TIMEOUT_MS }, async () => {
  const scope = newScope();
  const entity = unique("sub");
  const first = await client.append([{ scope, entity, type: "A", payload: "1" }]);
  const sub = client.subscribe(first.firstPosition, { filter: { scopes: [scope] } });
  try {
    const iterator = sub[Symbol.asyncIterator]();
    assert.equal((await take(iterator, 1))[0]!.type, "A");
    const live = await client.append([{ scope, entity, type: "B", payload: "2" }]);
    const [event] = await take(iterator, 1);
    assert.deepEqual([event!.type, event!.position], ["B", live.firstPosition]);
    assert.ok(sub.caughtUp);
    assert.equal(sub.position, live.firstPosition);
  } finally {
    sub.close();
  }
});

test("subscribe from now skips the past", { timeout: TEST_TIMEOUT_MS }, async () => {
  const scope = newScope();
  const entity = unique("sub");
  await client.append([{ scope, entity, type: "Past" }]);
  const sub: Subscription = client.subscribe(null, { filter: { scopes: [scope] } });
  try {
    // The stream starts when iteration does; wait until it has caught up before appending.
    const next = sub[Symbol.asyncIterator]().next();
    await until(() => sub.caughtUp, "a from-now subscription reports catching up at once");
    await client.append([{ scope, entity, type: "Future" }]);
    const first = await next;
    assert.equal(first.done, false);
    assert.equal(first.value?.type, "Future");
  } finally {
    sub.close();
  }
});

test("leaving a for-await loop closes the subscription", { timeout: TEST_TIMEOUT_MS }, async () => {
  const scope = newScope();
  const receipt = await client.append([1, 2, 3].map((idx) => ({ scope, entity: unique("sub"), type: `E${idx}` })));
  const sub = client.subscribe(receipt.firstPosition, { filter: { scopes: [scope] } });
  const seen: string[] = [];
  for await (const event of sub) {
    seen.push(event.type);
    if (seen.length === 2) {
      break;
    }
  }
  assert.deepEqual(seen, ["E1", "E2"]);
  assert.ok(sub.closed, "breaking out of the loop cancels the stream");
});

test("a dropped stream resumes after the last position seen", { timeout: TEST_TIMEOUT_MS }, async () => {
  const scope = newScope();
  const entity = unique("sub");
  const before = await client.append([1, 2, 3].map((idx) => ({ scope, entity, type: `E${idx}` })));
  const proxy = await Proxy.start(serverAddress());
  const proxied = new Client(proxy.address);
  const sub = proxied.subscribe(before.firstPosition, { filter: { scopes: [scope] } });
  try {
    const iterator = sub[Symbol.asyncIterator]();
    const seen = await take(iterator, 2);
    assert.ok(proxy.drop() > 0, "the subscription's connection was open");
    const afterDrop = await client.append([4, 5].map((idx) => ({ scope, entity, type: `E${idx}` })));
    seen.push(...(await take(iterator, 3)));
    assert.ok(sub.resumes >= 1, "the stream was cut, so it must have resumed");
    assert.deepEqual(
      seen.map((event) => event.position),
      [...before.events, ...afterDrop.events].map((committed) => committed.position),
    );
    assert.deepEqual(
      seen.map((event) => event.type),
      ["E1", "E2", "E3", "E4", "E5"],
    );
  } finally {
    sub.close();
    proxied.close();
    await proxy.stop();
  }
});
