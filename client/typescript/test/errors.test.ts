/**
 * Refusals arrive as typed errors carrying what the server's status details say: a gate
 * denial's gate, code and facts; a conflict's entity, expected and actual versions; an invalid
 * argument's field path; an unreachable server as Unavailable.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  Client,
  Code,
  Conflict,
  Denied,
  InvalidArgument,
  NO_STREAM,
  NewEvent,
  Unavailable,
  cel,
  uniqueTag,
} from "../src/index.js";
import { connect, newScope, rejection, unique } from "./support.js";

const client = connect();
after(() => client.close());

test("a gate denial carries gate, code and facts", async () => {
  const scope = newScope();
  const name = unique("ts-unique-email");
  await client.registerGate(name, uniqueTag("email:"), { scopes: [scope] });
  let denied: Denied;
  const email = `email:${unique("a")}@example.com`;
  try {
    await client.append([{ scope, entity: unique("user"), type: "UserRegistered", tags: [email] }]);
    denied = await rejection(
      client.append([{ scope, entity: unique("user"), type: "UserRegistered", tags: [email] }]),
      Denied,
    );
  } finally {
    await client.removeGate(name);
  }
  assert.equal(denied.statusCode, Code.FailedPrecondition);
  assert.equal(denied.gate, name);
  assert.equal(denied.code, "TAG_TAKEN");
  assert.equal(denied.facts["tag"], email);
  assert.ok(denied.message.includes(email), denied.message);
});

test("a CEL denial names its code", async () => {
  const scope = newScope();
  const name = unique("ts-small-orders");
  await client.registerGate(name, cel("event.payload.total < 1000"), { scopes: [scope], types: ["OrderPlaced"] });
  let denied: Denied;
  try {
    await client.append([NewEvent.json(scope, unique("order"), "OrderPlaced", { total: 5 })]);
    denied = await rejection(
      client.append([NewEvent.json(scope, unique("order"), "OrderPlaced", { total: 5000 })]),
      Denied,
    );
  } finally {
    await client.removeGate(name);
  }
  assert.deepEqual([denied.gate, denied.code], [name, "CEL_FALSE"]);
});

test("a stale expectation is a Conflict and writes nothing", async () => {
  const scope = newScope();
  const entity = unique("order");
  await client.append([{ scope, entity, type: "OrderPlaced" }]);
  const conflict = await rejection(
    client.append([{ scope, entity, type: "OrderShipped" }], { expected: [{ scope, entity, version: 3 }] }),
    Conflict,
  );
  assert.deepEqual([conflict.scope, conflict.entity], [scope, entity]);
  assert.equal(conflict.expected, "3");
  assert.equal(conflict.actual, 1n);
  const exists = await rejection(
    client.append([{ scope, entity, type: "Again" }], { expected: [{ scope, entity, version: NO_STREAM }] }),
    Conflict,
  );
  assert.equal(exists.actual, 1n);
  assert.deepEqual(
    (await client.readEntity(scope, entity)).events.map((event) => event.type),
    ["OrderPlaced"],
  );
});

test("an invalid field is named", async () => {
  const scope = newScope();
  const invalid = await rejection(
    client.append([{ scope, entity: unique("order"), type: "E", causation: ["not-a-uuid"] }]),
    InvalidArgument,
  );
  assert.equal(invalid.statusCode, Code.InvalidArgument);
  assert.equal(invalid.field, "events[0].causation[0]");
  assert.ok(invalid.violations[0]![1].includes("not-a-uuid"), String(invalid.violations));
  const badId = await rejection(client.get("not-a-uuid"), InvalidArgument);
  assert.equal(badId.field, "id");
});

test("a wall time past what the clock can hold is refused naming the field", async () => {
  const invalid = await rejection(client.readLog(1, { filter: { since: { wallMs: 1n << 48n } } }), InvalidArgument);
  assert.equal(invalid.field, "filter.since.wall.seconds");
  const page = await client.readLog(1, { filter: { since: { wallMs: (1n << 48n) - 1n } } });
  assert.deepEqual(page.events, []);
});

test("an invalid argument is the caller's bug and keeps its own type", async () => {
  const scope = newScope();
  const entity = unique("order");
  await rejection(client.append([{ scope, entity, type: "E" }], { expected: [{ scope, entity, version: -1 }] }), RangeError);
  await rejection(client.readLog(2 ** 53), RangeError);
});

test("a server that cannot be reached is Unavailable", async () => {
  // Port 1 on loopback: nothing listens there, so the connection is refused at once.
  const nowhere = new Client("127.0.0.1:1", { timeoutMs: 5_000 });
  try {
    const unavailable = await rejection(nowhere.head(), Unavailable);
    assert.equal(unavailable.statusCode, Code.Unavailable);
    assert.equal(unavailable.leaderAddress, null);
    assert.equal(unavailable.outcomeUnknown, false);
  } finally {
    nowhere.close();
  }
});
