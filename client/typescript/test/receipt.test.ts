/**
 * Offline receipt verification: byte for byte the same as the Rust client (golden values of
 * client/src/receipt.rs, printed by causeway-core, also pinned by the Python client's tests), a
 * receipt the live server produced verifies, and a tampered copy is refused, whichever field was
 * changed.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { blake3 } from "@noble/hashes/blake3.js";
import {
  Receipt,
  ReceiptError,
  allowedTypes,
  canonicalBytes,
  eventHash,
  rfc3339,
  verifyReceipt,
  wallMsFrom,
  wallMsFromRfc3339,
  type Committed,
  type Event,
} from "../src/index.js";
import { connect, newScope, publicKey, thrown, unique } from "./support.js";

// The golden store of client/src/receipt.rs: signing secret [7; 32], gate `order-types`
// registered at position 1, then one append of two events of acme/order-507.
const PUBLIC_KEY = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
const DIGEST = "47501706f0661beb7da5fdd2cdcf65d73bed9995414dd79a8eb86718674f5667";
const SIGNATURE =
  "2f2b0246358a73e2ac2c4bd68a1c210f310aa95f412281369a9e9d9aae40fbaa" +
  "5be1787b1e2b9aa240ef429a9b189a0c8e7cf595025d8fb2050b63b062b81107";
const CANONICAL = [
  "63617573657761792e726563656970742e76310002000000",
  "01890a5dac96774bbcceb302099a8057",
  "0200000000000000",
  "0100000000000000",
  "05007b38d360ba01",
  "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "01890a5dac967c4e9a1f3d2b8e6f0a11",
  "0300000000000000",
  "0200000000000000",
  "06007b38d360ba01",
  "24a94e840d404cf090c0950b522694d1843aeff94ab5ffad41d7af5288048e7c",
  "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047",
  "01000000",
  "0b0000006f726465722d7479706573",
  "0100000000000000",
  "47501706f0661beb7da5fdd2cdcf65d73bed9995414dd79a8eb86718674f5667",
].join("");
const ID_1 = "01890a5d-ac96-774b-bcce-b302099a8057";
const ID_2 = "01890a5d-ac96-7c4e-9a1f-3d2b8e6f0a11";
const CORRELATION = "01890a5d-0000-7000-8000-000000000042";
const HASH_1 = "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047";
const HASH_2 = "24a94e840d404cf090c0950b522694d1843aeff94ab5ffad41d7af5288048e7c";
const WALL_MS = 1_900_000_000_123n;

function hex(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text, "hex"));
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

function goldenEvents(): Event[] {
  const common = { scope: "acme", entity: "order-507", correlationId: CORRELATION };
  return [
    {
      ...common,
      position: 2n,
      version: 1n,
      timestamp: { wallMs: WALL_MS, logical: 5 },
      id: ID_1,
      type: "OrderPlaced",
      tags: ["customer:42", "region:eu"],
      payload: new TextEncoder().encode('{"total":12}'),
      contentType: "application/json",
      // Out of order on purpose: the encoding sorts by key.
      metadata: { zeta: "last", alpha: "first", mid: "dle" },
      causation: [],
      hash: hex(HASH_1),
    },
    {
      ...common,
      position: 3n,
      version: 2n,
      timestamp: { wallMs: WALL_MS, logical: 6 },
      id: ID_2,
      type: "OrderPaid",
      tags: [],
      payload: Uint8Array.of(0, 159, 146, 150, 255),
      contentType: "",
      metadata: {},
      causation: [ID_1],
      hash: hex(HASH_2),
    },
  ];
}

function goldenReceipt(): Receipt {
  return new Receipt(
    [
      { id: ID_1, position: 2n, version: 1n, timestamp: { wallMs: WALL_MS, logical: 5 }, hash: hex(HASH_1), prevHash: new Uint8Array(32) },
      { id: ID_2, position: 3n, version: 2n, timestamp: { wallMs: WALL_MS, logical: 6 }, hash: hex(HASH_2), prevHash: hex(HASH_1) },
    ],
    [{ name: "order-types", version: 1n }],
    hex(DIGEST),
    "ed25519:ea4a6c63e29c520a",
    hex(SIGNATURE),
  );
}

function flip(data: Uint8Array, index = 0): Uint8Array {
  const copy = Uint8Array.from(data);
  copy[index] = copy[index]! ^ 1;
  return copy;
}

function withReceipt(
  receipt: Receipt,
  changes: Partial<Pick<Receipt, "events" | "gates" | "digest" | "signatureKeyId" | "signature">>,
): Receipt {
  return new Receipt(
    changes.events ?? receipt.events,
    changes.gates ?? receipt.gates,
    changes.digest ?? receipt.digest,
    changes.signatureKeyId ?? receipt.signatureKeyId,
    changes.signature ?? receipt.signature,
  );
}

function withEvent(receipt: Receipt, index: number, changes: Partial<Committed>): Receipt {
  const events = receipt.events.map((committed, idx) => (idx === index ? { ...committed, ...changes } : committed));
  return withReceipt(receipt, { events });
}

// Each tamper names what it changes; all must be refused by the signature check.
const RECEIPT_TAMPERS: Array<[string, (receipt: Receipt) => Receipt]> = [
  ["event hash", (r) => withEvent(r, 0, { hash: flip(r.events[0]!.hash) })],
  ["prev_hash", (r) => withEvent(r, 1, { prevHash: flip(r.events[1]!.prevHash) })],
  ["position", (r) => withEvent(r, 0, { position: r.events[0]!.position + 1n })],
  ["version", (r) => withEvent(r, 1, { version: 7n })],
  ["timestamp", (r) => withEvent(r, 0, { timestamp: { wallMs: WALL_MS, logical: 9 } })],
  ["id", (r) => withEvent(r, 1, { id: ID_1 })],
  ["digest", (r) => withReceipt(r, { digest: flip(r.digest) })],
  ["gate", (r) => withReceipt(r, { gates: [{ name: "order-typez", version: 1n }] })],
  ["dropped gate", (r) => withReceipt(r, { gates: [] })],
  ["signature", (r) => withReceipt(r, { signature: flip(r.signature, 10) })],
];

test("canonical bytes match the core", () => {
  assert.equal(toHex(canonicalBytes(goldenReceipt())), CANONICAL);
});

test("event hashes match the core", () => {
  const [first, second] = goldenEvents();
  assert.equal(toHex(eventHash(first!, new Uint8Array(32))), HASH_1);
  assert.equal(toHex(eventHash(second!, hex(HASH_1))), HASH_2);
});

/** The hash of golden event 2 with `metadata` as the given entries in this order, its bytes laid
 * out here by hand (docs/FORMAT.md) rather than by `eventHash`. */
function handHash(metadata: Array<[string, string]>): string {
  const u16 = (value: number) => Buffer.from(Uint16Array.of(value).buffer);
  const u64 = (value: bigint) => Buffer.from(BigUint64Array.of(value).buffer);
  const str = (value: string) => Buffer.concat([u16(Buffer.byteLength(value)), Buffer.from(value)]);
  const uuid = (value: string) => Buffer.from(value.replaceAll("-", ""), "hex");
  const preimage = Buffer.concat([
    hex(HASH_1),
    Uint8Array.of(1, 1),
    u64(3n),
    u64(2n),
    u64((WALL_MS << 16n) | 6n),
    uuid(ID_2),
    uuid(CORRELATION),
    ...["acme", "order-507", "OrderPaid", ""].map(str),
    u16(0),
    u16(metadata.length),
    ...metadata.flatMap(([key, value]) => [str(key), str(value)]),
    u16(1),
    uuid(ID_1),
    Uint8Array.of(0, 159, 146, 150, 255),
  ]);
  return toHex(blake3(preimage));
}

test("metadata is sorted by UTF-8 bytes, as the core's BTreeMap sorts it", () => {
  assert.equal(handHash([]), HASH_2, "the hand-made layout is the core's");
  // U+FF5E sorts after U+1F600 by UTF-16 code units (JavaScript's default order) but before it
  // by UTF-8 bytes; the hash must follow the bytes, whatever order the map was built in.
  assert.ok("\uFF5E" > "\u{1F600}", "JavaScript's string order is the other one");
  const expected = handHash([
    ["\uFF5E", "b"],
    ["\u{1F600}", "a"],
  ]);
  for (const metadata of [
    { "\u{1F600}": "a", "\uFF5E": "b" },
    { "\uFF5E": "b", "\u{1F600}": "a" },
  ]) {
    assert.equal(toHex(eventHash({ ...goldenEvents()[1]!, metadata }, hex(HASH_1))), expected);
  }
});

test("the golden receipt verifies with key and events", () => {
  verifyReceipt(goldenReceipt(), { publicKey: PUBLIC_KEY, events: goldenEvents() });
  verifyReceipt(goldenReceipt(), { publicKey: hex(PUBLIC_KEY) });
  verifyReceipt(goldenReceipt(), { events: goldenEvents() });
});

test("a check of nothing is refused", () => {
  thrown(() => verifyReceipt(goldenReceipt(), {}), TypeError);
});

for (const [what, tamper] of RECEIPT_TAMPERS) {
  test(`a changed golden receipt breaks the signature: ${what}`, () => {
    const refused = thrown(() => verifyReceipt(tamper(goldenReceipt()), { publicKey: PUBLIC_KEY }), ReceiptError);
    assert.equal(refused.kind, "signature", `changing the ${what}: ${refused.message}`);
  });
}

test("a changed event does not hash to the receipt", () => {
  const tampers: Array<[string, Partial<Event>]> = [
    ["payload", { payload: new TextEncoder().encode('{"total":13}') }],
    ["metadata", { metadata: { zeta: "last", alpha: "first", mid: "DLE" } }],
    ["tag order", { tags: ["region:eu", "customer:42"] }],
    ["correlation", { correlationId: ID_2 }],
    ["causation", { causation: [ID_2] }],
  ];
  for (const [what, changes] of tampers) {
    const events = goldenEvents();
    events[0] = { ...events[0]!, ...changes };
    const refused = thrown(() => verifyReceipt(goldenReceipt(), { publicKey: PUBLIC_KEY, events }), ReceiptError);
    assert.deepEqual([refused.kind, refused.index], ["event", 0], what);
    assert.ok(refused.message.includes("do not hash"), what);
  }
});

test("a wrong key or a missing signature is refused", () => {
  const wrong = thrown(() => verifyReceipt(goldenReceipt(), { publicKey: flip(hex(PUBLIC_KEY)) }), ReceiptError);
  assert.equal(wrong.kind, "signature");
  const unsigned = thrown(
    () => verifyReceipt(withReceipt(goldenReceipt(), { signature: new Uint8Array() }), { publicKey: PUBLIC_KEY }),
    ReceiptError,
  );
  assert.equal(unsigned.kind, "unsigned");
});

test("payload_base64 is read with or without padding, as the CLI reads it", () => {
  // Past the payload, the events fail on their id: the padding itself was accepted.
  for (const base64 of ["Zm9vYg", "Zm9vYg=", "Zm9vYg=="]) {
    const later = thrown(() => verifyReceipt(goldenReceipt(), { events: JSON.stringify([{ id: "x", payload_base64: base64 }]) }), ReceiptError);
    assert.doesNotMatch(later.message, /payload/);
  }
  for (const base64 of ["Z", "Zm9v!g==", "Zm9vYg==="]) {
    const refused = thrown(() => verifyReceipt(goldenReceipt(), { events: JSON.stringify([{ id: "x", payload_base64: base64 }]) }), ReceiptError);
    assert.match(refused.message, /payload_base64 is not valid base64/);
  }
});

test("a receipt naming another key than the one that verifies it is refused", () => {
  for (const named of ["ed25519:e40e84c5b5e4af31", "", "golden-key"]) {
    const receipt = withReceipt(goldenReceipt(), { signatureKeyId: named });
    const refused = thrown(() => verifyReceipt(receipt, { publicKey: PUBLIC_KEY }), ReceiptError);
    assert.equal(refused.kind, "signature");
    assert.match(refused.message, /names key/);
    // Without the key, its name is not looked at either.
    verifyReceipt(receipt, { events: goldenEvents() });
  }
});

test("timestamps are RFC 3339 in JSON and whole milliseconds on the wire", () => {
  const json = goldenReceipt().toJSON();
  assert.deepEqual(json.events[0]!.timestamp, { wall: rfc3339(WALL_MS), logical: 5 });
  assert.equal(rfc3339(1_700_000_000_123n), "2023-11-14T22:13:20.123Z");
  assert.equal(wallMsFromRfc3339("2023-11-14T23:13:20.123+01:00"), 1_700_000_000_123n);
  assert.equal(wallMsFromRfc3339("2023-11-14T22:13:20.123000000Z"), 1_700_000_000_123n);
  for (const bad of ["2023-11-14T22:13:20.1234Z", "1969-12-31T23:59:59.999Z", "2023-02-30T00:00:00Z", "yesterday"]) {
    const copy = structuredClone(json);
    copy.events[0]!.timestamp.wall = bad;
    assert.throws(() => Receipt.fromJSON(copy), ReceiptError, bad);
  }
  assert.throws(() => wallMsFrom(1n, 500), RangeError);
});

test("the JSON form round-trips and verifies", () => {
  const text = JSON.stringify(goldenReceipt());
  assert.deepEqual(Receipt.fromJSON(JSON.parse(text)), goldenReceipt());
  verifyReceipt(text, { publicKey: PUBLIC_KEY });
  const malformed = thrown(() => verifyReceipt('{"events": [{"id": "x"}], "digest": ""}', { publicKey: PUBLIC_KEY }), ReceiptError);
  assert.equal(malformed.kind, "malformed");
});

test("text that is not the CLI's JSON is malformed, named with what was expected", () => {
  const receipt = thrown(() => verifyReceipt('{"events": [', { publicKey: PUBLIC_KEY }), ReceiptError);
  assert.equal(receipt.kind, "malformed");
  assert.match(receipt.message, /^malformed receipt: not JSON .*causeway --output json append/);
  const events = thrown(() => verifyReceipt(goldenReceipt(), { events: '{"a": 1}\n{bad\n' }), ReceiptError);
  assert.equal(events.kind, "malformed");
  assert.match(events.message, /^malformed events line 2: not JSON .*causeway --output json get/);
});

test("an event's payload text that is not its checked bytes is malformed", () => {
  const events = (payload: unknown) =>
    JSON.stringify([{ id: "x", payload_base64: "e30=", ...(payload === undefined ? {} : { payload }) }]);
  for (const shown of ['{"total": 9}', null]) {
    const refused = thrown(() => verifyReceipt(goldenReceipt(), { events: events(shown) }), ReceiptError);
    assert.equal(refused.kind, "malformed");
    assert.match(refused.message, /events\[0\]\.payload is not the payload that events\[0\]\.payload_base64 holds/);
  }
  // The text as written, or none at all, passes this check (and fails later, on the id).
  for (const shown of ["{}", undefined]) {
    const later = thrown(() => verifyReceipt(goldenReceipt(), { events: events(shown) }), ReceiptError);
    assert.doesNotMatch(later.message, /payload/);
  }
});

test("a server receipt verifies offline and tampered copies do not", async () => {
  const client = connect();
  after(() => client.close());
  const key = publicKey();
  const scope = newScope();
  const gate = unique("ts-receipt-types");
  await client.registerGate(gate, allowedTypes(["OrderPlaced", "OrderPaid"]), { scopes: [scope] });
  let receipt: Receipt;
  const entity = unique("order");
  try {
    receipt = await client.append([
      { scope, entity, type: "OrderPlaced", payload: '{"total":12}', contentType: "application/json", tags: ["customer:42"], metadata: { zeta: "1", alpha: "2" } },
      { scope, entity, type: "OrderPaid", payload: Uint8Array.of(0, 159, 255) },
    ]);
  } finally {
    await client.removeGate(gate);
  }
  assert.ok(receipt.signature.length > 0, "the server signs receipts (start it with --signing-key)");
  assert.deepEqual(
    receipt.gates.map((pass) => pass.name),
    [gate],
    "the receipt names the gate it passed",
  );
  const events = await Promise.all(receipt.events.map((committed) => client.get(committed.id)));
  verifyReceipt(receipt, { publicKey: key, events });
  verifyReceipt(JSON.stringify(receipt), { publicKey: key, events });
  for (const [what, tamper] of RECEIPT_TAMPERS) {
    const refused = thrown(() => verifyReceipt(tamper(receipt), { publicKey: key }), ReceiptError);
    assert.equal(refused.kind, "signature", what);
  }
  const payload = thrown(
    () => verifyReceipt(receipt, { publicKey: key, events: [{ ...events[0]!, payload: new TextEncoder().encode('{"total":13}') }, events[1]!] }),
    ReceiptError,
  );
  assert.equal(payload.kind, "event");
  const position = thrown(
    () => verifyReceipt(withEvent(receipt, 0, { position: receipt.firstPosition + 1n }), { events }),
    ReceiptError,
  );
  assert.ok(position.message.includes("position differs"), position.message);
  const count = thrown(() => verifyReceipt(receipt, { events: events.slice(0, 1) }), ReceiptError);
  assert.equal(count.kind, "count");
});
