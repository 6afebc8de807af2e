/**
 * Every call of the wrapper against a live causewayd: appends under conditions and with an
 * idempotency key, each read, the head, gates, and a dry run.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  Conflict,
  IdempotencyConflict,
  InvalidArgument,
  NO_STREAM,
  NewEvent,
  NotFound,
  allowedTypes,
  eventJson,
  uniqueTag,
  type Append,
} from "../src/index.js";
import { connect, newScope, rejection, unique } from "./support.js";

const client = connect();
after(() => client.close());

test("append returns a receipt with consecutive positions", async () => {
  const scope = newScope();
  const entity = unique("order");
  const receipt = await client.append(
    [
      NewEvent.json(scope, entity, "OrderPlaced", { total: 12 }, { tags: ["customer:42"] }),
      { scope, entity, type: "OrderPaid", payload: "{}", metadata: { by: "card" } },
    ],
    { expected: [{ scope, entity, version: NO_STREAM }] },
  );
  assert.deepEqual(
    receipt.events.map((committed) => committed.version),
    [1n, 2n],
  );
  assert.equal(receipt.lastPosition, receipt.firstPosition + 1n);
  assert.equal(receipt.digest.length, 32);
  assert.deepEqual(receipt.events[1]!.prevHash, receipt.events[0]!.hash, "one entity's chain");
});

test("an idempotent retry returns the first receipt", async () => {
  const scope = newScope();
  const key = unique("key");
  const events = [{ scope, entity: unique("order"), type: "OrderPlaced", payload: "1" }];
  const first = await client.append(events, { idempotencyKey: key });
  assert.deepEqual(await client.append(events, { idempotencyKey: key }), first);
  const reused = await rejection(
    client.append([{ scope, entity: unique("order"), type: "Other", payload: "2" }], { idempotencyKey: key }),
    IdempotencyConflict,
  );
  assert.equal(reused.key, key);
});

test("appendStream answers in order, with refusals in place", async () => {
  const scope = newScope();
  const entity = unique("order");
  const placed = (version: number): Append => ({
    events: [{ scope, entity, type: "OrderPlaced", payload: String(version) }],
    expected: [{ scope, entity, version }],
  });
  // An async generator, as a caller feeding a long stream would.
  async function* appends(): AsyncGenerator<Append> {
    yield { events: [{ scope, entity, type: "OrderPlaced", payload: "0" }], expected: [{ scope, entity, version: NO_STREAM }] };
    yield placed(1);
    yield placed(7); // a conflict: the entity is at version 2
    yield { events: [{ scope, entity, type: "", payload: "no type" }] };
    yield placed(2);
  }
  const outcomes = [];
  for await (const outcome of client.appendStream(appends())) {
    outcomes.push(outcome);
  }
  assert.deepEqual(
    outcomes.map((outcome) => outcome.constructor.name),
    ["Receipt", "Receipt", "Conflict", "InvalidArgument", "Receipt"],
  );
  const conflict = outcomes[2];
  assert.ok(conflict instanceof Conflict && conflict.actual === 2n, String(conflict));
  const invalid = outcomes[3];
  assert.ok(invalid instanceof InvalidArgument, String(invalid));
  assert.deepEqual(
    invalid.violations.map(([field]) => field),
    ["append.events[0].type"],
  );
  const page = await client.readEntity(scope, entity);
  assert.deepEqual(
    page.events.map((event) => [event.version, new TextDecoder().decode(event.payload)]),
    [
      [1n, "0"],
      [2n, "1"],
      [3n, "2"],
    ],
  );
});

test("get returns the event as written", async () => {
  const scope = newScope();
  const entity = unique("order");
  const receipt = await client.append([
    NewEvent.json(scope, entity, "OrderPlaced", { total: 12 }, { tags: ["a", "b"], metadata: { k: "v" } }),
  ]);
  const event = await client.get(receipt.events[0]!.id);
  assert.deepEqual([event.scope, event.entity, event.type], [scope, entity, "OrderPlaced"]);
  assert.deepEqual(eventJson(event), { total: 12 });
  assert.equal(event.contentType, "application/json");
  assert.deepEqual(event.tags, ["a", "b"]);
  assert.deepEqual(event.metadata, { k: "v" });
  assert.equal(event.position, receipt.firstPosition);
  assert.deepEqual(event.hash, receipt.events[0]!.hash);
});

test("get of an unknown id is NotFound", async () => {
  await rejection(client.get("01890a5d-ac96-774b-bcce-b302099a8057"), NotFound);
});

test("readEntity pages forward and backward", async () => {
  const scope = newScope();
  const entity = unique("order");
  await client.append([1, 2, 3, 4, 5].map((idx) => ({ scope, entity, type: `E${idx}` })));
  const first = await client.readEntity(scope, entity, { limit: 2 });
  assert.deepEqual(
    first.events.map((event) => event.version),
    [1n, 2n],
  );
  assert.equal(first.end, false);
  const rest = await client.readEntity(scope, entity, { fromVersion: first.nextVersion, limit: 10 });
  assert.deepEqual(
    rest.events.map((event) => event.type),
    ["E3", "E4", "E5"],
  );
  assert.equal(rest.end, true);
  const backward = await client.readEntity(scope, entity, { fromVersion: 0, backward: true, limit: 2 });
  assert.deepEqual(
    backward.events.map((event) => event.version),
    [5n, 4n],
  );
});

test("readLog pages through a filter, and iterLog walks every page", async () => {
  const scope = newScope();
  const tagged = unique("customer");
  // Separate appends: a forward page never ends inside an append.
  const receipts = [];
  for (let idx = 0; idx < 5; idx += 1) {
    receipts.push(await client.append([{ scope, entity: unique("order"), type: "OrderPlaced", tags: [tagged] }]));
  }
  await client.append([{ scope, entity: unique("order"), type: "Untagged" }]);
  const byTag = { scopes: [scope], items: [{ tags: [tagged] }] };
  const page = await client.readLog(receipts[0]!.firstPosition, { filter: byTag, limit: 3 });
  assert.equal(page.events.length, 3);
  assert.equal(page.end, false);
  const rest = await client.readLog(page.nextPosition, { filter: byTag, limit: 3 });
  assert.equal(rest.events.length, 2);
  const every = [];
  for await (const event of client.iterLog(receipts[0]!.firstPosition, { filter: byTag, limit: 2 })) {
    every.push(event.position);
  }
  assert.deepEqual(
    every,
    receipts.map((receipt) => receipt.firstPosition),
  );
  const backward = await client.readLog(0, { filter: { scopes: [scope] }, backward: true, limit: 1 });
  assert.equal(backward.events[0]!.type, "Untagged");
});

test("a forward page holds whole appends", async () => {
  const scope = newScope();
  const receipt = await client.append([0, 1, 2, 3].map(() => ({ scope, entity: unique("order"), type: "E" })));
  const page = await client.readLog(receipt.firstPosition, { filter: { scopes: [scope] }, limit: 1 });
  assert.deepEqual(
    page.events.map((event) => event.position),
    receipt.events.map((committed) => committed.position),
  );
});

test("head is at or past the last append", async () => {
  const receipt = await client.append([{ scope: newScope(), entity: unique("order"), type: "OrderPlaced" }]);
  const head = await client.head();
  assert.ok(head.position >= receipt.lastPosition);
  assert.equal(head.digest.length, 32);
});

test("dryRun writes nothing", async () => {
  const scope = newScope();
  const entity = unique("order");
  const receipt = await client.dryRun([{ scope, entity, type: "OrderPlaced" }]);
  assert.equal(receipt.events[0]!.version, 1n);
  assert.equal(receipt.signature.length, 0);
  assert.deepEqual((await client.readEntity(scope, entity)).events, []);
});

test("gates register, list, replace and remove", async () => {
  const scope = newScope();
  const name = unique("ts-types");
  const registered = await client.registerGate(name, allowedTypes(["OrderPlaced"]), { scopes: [scope] });
  try {
    const gates = new Map((await client.listGates()).map((gate) => [gate.name, gate]));
    assert.equal(gates.get(name)?.version, registered.firstPosition);
    assert.deepEqual(gates.get(name)?.scopes, [scope]);
    assert.deepEqual(gates.get(name)?.rule, allowedTypes(["OrderPlaced"]));
    const replaced = await client.registerGate(name, uniqueTag("email:"), { scopes: [scope] });
    const after = (await client.listGates()).find((gate) => gate.name === name);
    assert.equal(after?.version, replaced.firstPosition);
    assert.deepEqual(after?.rule, uniqueTag("email:"));
  } finally {
    await client.removeGate(name);
  }
  assert.ok(!(await client.listGates()).some((gate) => gate.name === name));
  await rejection(client.removeGate(name), NotFound);
});
