/**
 * The `token` option against a causewayd that enforces a policy (`--auth-file`): the token goes
 * on every call, streams included, and the server tells a missing or unknown token
 * (UNAUTHENTICATED) from a known one outside its grant (PERMISSION_DENIED).
 *
 * The tests drive the server at $CAUSEWAY_SECURED_SERVER (host:port) as the principal whose token
 * is $CAUSEWAY_TOKEN, granted append, read and subscribe on the scopes `ci-*` and nothing else;
 * the policy has no `[anonymous]` table, so a call without a token is refused.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { CausewayError, Client, Code, Receipt, type Event } from "../src/index.js";
import { rejection, unique } from "./support.js";

/** A test that has not finished by then fails instead of hanging. */
const TEST_TIMEOUT_MS = 30_000;

/** The secured server's address; a missing variable fails the test rather than skipping it. */
function securedAddress(): string {
  const address = process.env["CAUSEWAY_SECURED_SERVER"];
  assert.ok(address, "set CAUSEWAY_SECURED_SERVER to the host:port of a causewayd started with --auth-file");
  return address;
}

/** The token of the principal granted `ci-*`; a missing variable fails the test rather than skipping it. */
function token(): string {
  const value = process.env["CAUSEWAY_TOKEN"];
  assert.ok(value, "set CAUSEWAY_TOKEN to a bearer token of the secured server's principal granted ci-*");
  return value;
}

/** Clients made by a test, closed when the file's tests are done. */
const clients: Client[] = [];
after(() => clients.forEach((client) => client.close()));

/** A client of the secured server, sending `bearer` when given. */
function connectSecured(bearer?: string): Client {
  const client = new Client(securedAddress(), bearer === undefined ? {} : { token: bearer });
  clients.push(client);
  return client;
}

/** A scope the token's grant covers, unique per call. */
function grantedScope(): string {
  return unique("ci-ts");
}

/** One event to append in `scope`. */
function oneEvent(scope: string): { scope: string; entity: string; type: string; payload: string } {
  return { scope, entity: unique("order"), type: "OrderPlaced", payload: "{}" };
}

test("with the token, append, read and subscribe succeed", { timeout: TEST_TIMEOUT_MS }, async () => {
  const client = connectSecured(token());
  const scope = grantedScope();
  const event = oneEvent(scope);
  const receipt = await client.append([event]);
  // So is an append stream.
  const streamed = [];
  for await (const outcome of client.appendStream([{ events: [{ ...event, type: "OrderPaid" }] }])) {
    streamed.push(outcome);
  }
  assert.deepEqual(
    streamed.map((outcome) => outcome.constructor.name),
    ["Receipt"],
    String(streamed[0]),
  );
  const page = await client.readEntity(scope, event.entity);
  assert.deepEqual(
    page.events.map((read) => [read.id, read.type]),
    [
      [receipt.events[0]!.id, "OrderPlaced"],
      [(streamed[0] as Receipt).events[0]!.id, "OrderPaid"],
    ],
  );
  // A subscription is a stream: it delivers only if the token goes on streams too.
  const sub = client.subscribe(receipt.firstPosition, { filter: { scopes: [scope] } });
  try {
    const next: IteratorResult<Event> = await sub[Symbol.asyncIterator]().next();
    assert.ok(!next.done, "the subscription ended before its first event");
    assert.deepEqual([next.value.id, next.value.position], [receipt.events[0]!.id, receipt.firstPosition]);
  } finally {
    sub.close();
  }
});

test("without a token, an append is Unauthenticated", async () => {
  const refused = await rejection(connectSecured().append([oneEvent(grantedScope())]), CausewayError);
  assert.equal(refused.statusCode, Code.Unauthenticated, String(refused));
});

test("with a wrong token, an append is Unauthenticated", async () => {
  const client = connectSecured("not-the-token");
  const refused = await rejection(client.append([oneEvent(grantedScope())]), CausewayError);
  assert.equal(refused.statusCode, Code.Unauthenticated, String(refused));
});

test("with the token, an append outside its grant is PermissionDenied", async () => {
  const client = connectSecured(token());
  const refused = await rejection(client.append([oneEvent(unique("other"))]), CausewayError);
  assert.equal(refused.statusCode, Code.PermissionDenied, String(refused));
});
