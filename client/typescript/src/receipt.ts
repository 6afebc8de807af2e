/**
 * Receipts, and their offline verification: no server, only the receipt, the events it names
 * and the server's Ed25519 public key.
 *
 * A fourth implementation (after core/src/receipt.rs, client/src/receipt.rs and the Python
 * client's receipt.py) of two byte layouts the core defines; it must agree with them byte for
 * byte:
 *
 * - an event's chain hash (docs/FORMAT.md, "Hash"):
 *   `blake3(prev_hash || [1, 1] || fields || payload)`, where `fields` are position, version and
 *   the packed timestamp (`wall_ms << 16 | logical`, the wall time in whole milliseconds) as little-endian u64, id and correlation id
 *   as 16 UUID bytes, scope, entity, type and content type as u16 length + UTF-8, the tags (u16
 *   count, each u16 length + UTF-8, in order), the metadata sorted by key's UTF-8 bytes (u16
 *   count, key and value each u16 length + UTF-8), and the causation ids (u16 count, 16 bytes);
 * - a receipt's canonical bytes, which the signature covers: `causeway.receipt.v1\0`, the event
 *   count (u32), per event its id (16), position, version and packed timestamp (u64 each), hash
 *   and prev_hash (32 each); the gate count (u32), per gate its name (u32 length + UTF-8) and
 *   version (u64); then the digest (32). Everything but the signature and its key id.
 *
 * `verifyReceipt` checks what it is given: each event against the receipt (assigned fields
 * equal, bytes hashing to the committed hash from the receipt's prev_hash) and, with a public
 * key, the signature. Without the key a forged receipt over genuine events passes, so pass it
 * whenever you have it. The tests pin both layouts to the golden values of client/src/receipt.rs.
 */

import { createPublicKey, verify as verifyEd25519 } from "node:crypto";
import { blake3 } from "@noble/hashes/blake3.js";
import type { Receipt as ReceiptPb } from "./gen/causeway/v1/receipt_pb.js";
import type { Event as EventPb } from "./gen/causeway/v1/event_pb.js";
import { eventFromPb, rfc3339, timestampFromPb, wallMsFromRfc3339, type Event, type Timestamp } from "./events.js";

/** Opens a receipt's canonical bytes, so a signature over a receipt is never taken for another. */
export const RECEIPT_DOMAIN_TAG = new TextEncoder().encode("causeway.receipt.v1\0");
/** The record format version whose hash this module computes. */
export const RECORD_VERSION = 1;
/** The record kind of an event. */
export const KIND_EVENT = 1;
/** Bytes in an event hash, a prev_hash and a log digest (blake3). */
export const HASH_BYTES = 32;
/** Bytes in an Ed25519 signature. */
export const SIGNATURE_BYTES = 64;
/** Bytes in an Ed25519 public key. */
export const PUBLIC_KEY_BYTES = 32;
/** The largest wall time a timestamp can carry: it packs as `wall_ms << 16 | logical`. */
export const WALL_MS_MAX = (1n << 48n) - 1n;
/** The largest logical counter a timestamp can carry. */
export const LOGICAL_MAX = 0xffff;
/** The largest length or count behind a u16 prefix. */
const U16_MAX = 0xffff;
/** The largest count or length behind a u32 prefix. */
const U32_MAX = 0xffff_ffff;
/** The largest u64. */
const U64_MAX = (1n << 64n) - 1n;

/** Why a receipt does not verify. */
export type ReceiptErrorKind = "count" | "event" | "malformed" | "unsigned" | "signature";

/** A receipt does not verify; the message says why. */
export class ReceiptError extends Error {
  /** `count` (receipt and events do not line up), `event` (an event differs from the receipt),
   * `malformed` (a value no genuine receipt holds), `unsigned` (a key was given, no signature),
   * or `signature` (it does not verify under the key). */
  readonly kind: ReceiptErrorKind;
  /** The event, from 0, for `event`; else null. */
  readonly index: number | null;

  constructor(kind: ReceiptErrorKind, message: string, index: number | null = null) {
    super(message);
    this.name = "ReceiptError";
    this.kind = kind;
    this.index = index;
  }
}

/** The fields assigned to one event on commit, and its chain link. */
export interface Committed {
  readonly id: string;
  readonly position: bigint;
  readonly version: bigint;
  readonly timestamp: Timestamp;
  readonly hash: Uint8Array;
  readonly prevHash: Uint8Array;
}

/** A gate the append passed, and the version of its definition (0 when built in). */
export interface GatePass {
  readonly name: string;
  readonly version: bigint;
}

/** The JSON form `causeway --output json append` prints (hex hashes and signature). */
export interface ReceiptJson {
  events: Array<{
    id: string;
    position: number;
    version: number;
    timestamp: { wall: string; logical: number };
    hash: string;
    prev_hash: string;
  }>;
  gates: Array<{ name: string; version: number }>;
  digest: string;
  signature_key_id: string;
  signature: string;
}

/** What an accepted append proves (proto/causeway/v1/receipt.proto). */
export class Receipt {
  constructor(
    /** One entry per event, in order. */
    readonly events: readonly Committed[],
    /** The gates the append passed, in the order they ran. */
    readonly gates: readonly GatePass[],
    /** The log digest after the append's last event (32 bytes). */
    readonly digest: Uint8Array,
    /** Names the signing key; empty when unsigned. */
    readonly signatureKeyId: string,
    /** The Ed25519 signature (64 bytes); empty when unsigned. */
    readonly signature: Uint8Array,
  ) {}

  /** The position of the append's first event. */
  get firstPosition(): bigint {
    return this.events[0]!.position;
  }

  /** The position of the append's last event. */
  get lastPosition(): bigint {
    return this.events[this.events.length - 1]!.position;
  }

  static fromPb(message: ReceiptPb): Receipt {
    return new Receipt(
      message.events.map((committed) => ({
        id: committed.id,
        position: committed.position,
        version: committed.version,
        timestamp: timestampFromPb(committed.timestamp),
        hash: committed.hash,
        prevHash: committed.prevHash,
      })),
      message.gates.map((gate) => ({ name: gate.name, version: gate.version })),
      message.digest,
      message.signatureKeyId,
      message.signature,
    );
  }

  /** The JSON form the CLI prints. Positions above 2^53 lose precision in JSON numbers. */
  toJSON(): ReceiptJson {
    return {
      events: this.events.map((committed) => ({
        id: committed.id,
        position: Number(committed.position),
        version: Number(committed.version),
        timestamp: { wall: rfc3339(committed.timestamp.wallMs), logical: committed.timestamp.logical },
        hash: toHex(committed.hash),
        prev_hash: toHex(committed.prevHash),
      })),
      gates: this.gates.map((gate) => ({ name: gate.name, version: Number(gate.version) })),
      digest: toHex(this.digest),
      signature_key_id: this.signatureKeyId,
      signature: toHex(this.signature),
    };
  }

  /** Reads the JSON form `toJSON` and the CLI write; a wrong shape is `malformed`. */
  static fromJSON(value: unknown): Receipt {
    const obj = object(value, "receipt");
    const events = array(obj, "events", "receipt").map((item, idx) => {
      const what = `receipt.events[${idx}]`;
      return {
        id: string(item, "id", what),
        position: uint(item, "position", what),
        version: uint(item, "version", what),
        timestamp: timestampFrom(item, what),
        hash: hex(item, "hash", what),
        prevHash: hex(item, "prev_hash", what),
      };
    });
    const gates = array(obj, "gates", "receipt", true).map((item, idx) => ({
      name: string(item, "name", `receipt.gates[${idx}]`),
      version: uint(item, "version", `receipt.gates[${idx}]`),
    }));
    const keyId = obj["signature_key_id"] ?? "";
    if (typeof keyId !== "string") {
      throw malformed("receipt.signature_key_id must be a string");
    }
    const signature = obj["signature"] ? hex(obj, "signature", "receipt") : new Uint8Array();
    return new Receipt(events, gates, hex(obj, "digest", "receipt"), keyId, signature);
  }
}

/** A receipt in any form: a `Receipt`, the wire message, the CLI's JSON as an object, or as
 * JSON text (a string or its UTF-8 bytes). */
export type ReceiptInput = Receipt | ReceiptPb | ReceiptJson | Record<string, unknown> | string | Uint8Array;

/** Events in any form: `Event`s, wire messages, or the CLI's JSON of `get`, `read` or `tail`
 * (objects, or JSON text: an array, an object with `events`, one event, or one event a line). */
export type EventsInput = ReadonlyArray<Event | EventPb | Record<string, unknown>> | string | Uint8Array;

/** What `verifyReceipt` checks the receipt against. */
export interface VerifyOptions {
  /** The server's Ed25519 public key: 32 bytes or 64 hex digits (causewayd logs it as
   * `signing_public_key`). */
  readonly publicKey?: Uint8Array | string;
  /** The events the receipt names, in order. */
  readonly events?: EventsInput;
}

/** A receipt from any form (see `ReceiptInput`). */
export function loadReceipt(receipt: ReceiptInput): Receipt {
  if (receipt instanceof Receipt) {
    return receipt;
  }
  if (typeof receipt === "string" || receipt instanceof Uint8Array) {
    return Receipt.fromJSON(parseJson(receipt, "receipt", RECEIPT_HINT));
  }
  if ((receipt as { $typeName?: unknown }).$typeName === "causeway.v1.Receipt") {
    return Receipt.fromPb(receipt as ReceiptPb);
  }
  return Receipt.fromJSON(receipt);
}

/** Events from any form (see `EventsInput`); the CLI's JSON must carry `payload_base64`. */
export function loadEvents(events: EventsInput): Event[] {
  let items: readonly unknown[];
  if (typeof events === "string" || events instanceof Uint8Array) {
    const text = typeof events === "string" ? events : new TextDecoder().decode(events);
    let values: unknown;
    try {
      values = JSON.parse(text);
    } catch {
      values = text
        .split("\n")
        .map((line, index) => [line, index + 1] as const)
        .filter(([line]) => line.trim())
        .map(([line, number]) => parseJson(line, `events line ${number}`, EVENTS_HINT));
    }
    if (!Array.isArray(values) && typeof values === "object" && values !== null) {
      const inner = (values as Record<string, unknown>)["events"];
      values = Array.isArray(inner) ? inner : [values];
    }
    if (!Array.isArray(values)) {
      throw malformed("events must be a JSON array, an object or JSON lines");
    }
    items = values;
  } else {
    items = events;
  }
  return items.map((item, idx) => {
    if (typeof item !== "object" || item === null) {
      throw malformed(`events[${idx}] is not an event: ${typeof item}`);
    }
    if ((item as { $typeName?: unknown }).$typeName === "causeway.v1.Event") {
      return eventFromPb(item as EventPb);
    }
    if (typeof (item as Event).position === "bigint") {
      return item as Event;
    }
    return eventFromJson(item as Record<string, unknown>, `events[${idx}]`);
  });
}

/**
 * Verifies a receipt offline and returns it; throws `ReceiptError` saying why not.
 *
 * With `publicKey`, the Ed25519 signature over `canonicalBytes` must verify: any change to an
 * id, position, version, timestamp, hash, prev_hash, gate or the digest is caught. With
 * `events`, each event must match the receipt and its bytes must hash to the committed hash. At
 * least one of the two must be given: a check of nothing is refused (a `TypeError`).
 */
export function verifyReceipt(receipt: ReceiptInput, options: VerifyOptions): Receipt {
  const loaded = loadReceipt(receipt);
  if (options.publicKey === undefined && options.events === undefined) {
    throw new TypeError("nothing to check: give the public key, the events, or both");
  }
  if (options.events !== undefined) {
    verifyEvents(loaded, loadEvents(options.events));
  }
  if (options.publicKey !== undefined) {
    verifySignature(loaded, options.publicKey);
  }
  return loaded;
}

/** Each event matches the receipt's entry at its index and hashes to its committed hash. */
export function verifyEvents(receipt: Receipt, events: readonly Event[]): void {
  if (receipt.events.length !== events.length) {
    throw new ReceiptError("count", `receipt names ${receipt.events.length} events but ${events.length} were given`);
  }
  receipt.events.forEach((committed, index) => {
    const event = events[index]!;
    const what = `receipt event ${index}`;
    const fields: Array<[string, boolean]> = [
      ["id", equalBytes(uuidBytes(committed.id, `${what} id`), uuidBytes(event.id, `${what} id`))],
      ["position", committed.position === event.position],
      ["version", committed.version === event.version],
      [
        "timestamp",
        packedTimestamp(committed.timestamp, `${what} timestamp`) === packedTimestamp(event.timestamp, `${what} timestamp`),
      ],
      ["hash", equalBytes(committed.hash, event.hash)],
    ];
    const differs = fields.find(([, same]) => !same);
    if (differs) {
      throw new ReceiptError("event", `event ${index} does not match the receipt: ${differs[0]} differs`, index);
    }
    const prevHash = hashBytes(committed.prevHash, `${what} prev_hash`);
    if (!equalBytes(eventHash(event, prevHash), committed.hash)) {
      throw new ReceiptError(
        "event",
        `event ${index} does not match the receipt: the event's bytes do not hash to the committed hash`,
        index,
      );
    }
  });
}

/** The receipt's Ed25519 signature verifies under `publicKey` over its canonical bytes. */
export function verifySignature(receipt: Receipt, publicKey: Uint8Array | string): void {
  const keyBytes = publicKeyBytes(publicKey);
  if (receipt.signature.length === 0) {
    throw new ReceiptError("unsigned", "receipt is not signed");
  }
  if (receipt.signature.length !== SIGNATURE_BYTES) {
    throw new ReceiptError(
      "signature",
      `signature does not verify: the signature is ${receipt.signature.length} bytes, not ${SIGNATURE_BYTES}`,
    );
  }
  const message = canonicalBytes(receipt);
  let valid: boolean;
  try {
    const key = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(keyBytes).toString("base64url") },
      format: "jwk",
    });
    valid = verifyEd25519(null, message, key, receipt.signature);
  } catch (err) {
    throw new ReceiptError("signature", `signature does not verify: ${(err as Error).message}`);
  }
  if (!valid) {
    throw new ReceiptError("signature", "signature does not verify");
  }
  // The key's name is not covered by the signature: it must name the key that verified it,
  // as the server checks.
  const expected = keyId(keyBytes);
  if (receipt.signatureKeyId !== expected) {
    throw new ReceiptError(
      "signature",
      `signature does not verify: the receipt names key ${JSON.stringify(receipt.signatureKeyId.slice(0, 64))}, the given public key is ${expected}`,
    );
  }
}

/** The id causewayd gives its signing key: `ed25519:` and the public key's first 8 bytes in hex. */
export function keyId(publicKey: Uint8Array): string {
  return `ed25519:${Buffer.from(publicKey.subarray(0, 8)).toString("hex")}`;
}

/** The bytes a receipt's signature covers (layout in the module overview). */
export function canonicalBytes(receipt: Receipt): Uint8Array {
  const out = new Bytes();
  out.put(RECEIPT_DOMAIN_TAG);
  out.u32(receipt.events.length, "receipt event count");
  receipt.events.forEach((committed, index) => {
    const what = `receipt event ${index}`;
    out.put(uuidBytes(committed.id, `${what} id`));
    out.u64(committed.position, `${what} position`);
    out.u64(committed.version, `${what} version`);
    out.u64(packedTimestamp(committed.timestamp, `${what} timestamp`), `${what} timestamp`);
    out.put(hashBytes(committed.hash, `${what} hash`));
    out.put(hashBytes(committed.prevHash, `${what} prev_hash`));
  });
  out.u32(receipt.gates.length, "receipt gate count");
  for (const gate of receipt.gates) {
    const name = utf8(gate.name);
    out.u32(name.length, "gate name length");
    out.put(name);
    out.u64(gate.version, "gate version");
  }
  out.put(hashBytes(receipt.digest, "receipt digest"));
  return out.bytes();
}

/** An event's chain hash from its fields, its payload and the previous hash of its entity (32
 * zero bytes for its first event). The event's own `hash` is ignored. */
export function eventHash(event: Event, prevHash: Uint8Array): Uint8Array {
  const fields = new Bytes();
  fields.u64(event.position, "event position");
  fields.u64(event.version, "event version");
  fields.u64(packedTimestamp(event.timestamp, "event timestamp"), "event timestamp");
  fields.put(uuidBytes(event.id, "event id"));
  fields.put(uuidBytes(event.correlationId, "event correlation_id"));
  fields.str16(event.scope, "event scope");
  fields.str16(event.entity, "event entity");
  fields.str16(event.type, "event type");
  fields.str16(event.contentType, "event content_type");
  fields.u16(event.tags.length, "event tag count");
  for (const tag of event.tags) {
    fields.str16(tag, "event tag");
  }
  // The core keeps metadata in a BTreeMap over UTF-8 bytes; JavaScript's default sort compares
  // UTF-16 code units, which orders some characters differently, so compare the bytes.
  const metadata = Object.entries(event.metadata)
    .map(([key, value]) => [utf8(key), utf8(value)] as const)
    .sort(([a], [b]) => Buffer.compare(a, b));
  fields.u16(metadata.length, "event metadata count");
  for (const [key, value] of metadata) {
    fields.u16(key.length, "event metadata key");
    fields.put(key);
    fields.u16(value.length, "event metadata value");
    fields.put(value);
  }
  fields.u16(event.causation.length, "event causation count");
  for (const parent of event.causation) {
    fields.put(uuidBytes(parent, "event causation id"));
  }
  const hasher = blake3.create();
  hasher.update(hashBytes(prevHash, "prev_hash"));
  hasher.update(Uint8Array.of(RECORD_VERSION, KIND_EVENT));
  hasher.update(fields.bytes());
  hasher.update(event.payload);
  return hasher.digest();
}

/** A timestamp packed as the core stores it, `wall_ms << 16 | logical`. */
export function packedTimestamp(timestamp: Timestamp, what: string): bigint {
  const { wallMs, logical } = timestamp;
  if (wallMs < 0n || wallMs > WALL_MS_MAX || !Number.isInteger(logical) || logical < 0 || logical > LOGICAL_MAX) {
    throw malformed(`${what}: ${wallMs}+${logical} does not fit 48 bits of milliseconds and 16 of counter`);
  }
  return (wallMs << 16n) | BigInt(logical);
}

/** Little-endian bytes, appended with the bounds of their length prefixes checked. */
class Bytes {
  private readonly chunks: Uint8Array[] = [];

  put(bytes: Uint8Array): void {
    this.chunks.push(bytes);
  }

  u16(value: number, what: string): void {
    if (!(Number.isInteger(value) && value >= 0 && value <= U16_MAX)) {
      throw malformed(`${what}: ${value} does not fit the u16 length prefix`);
    }
    const out = Buffer.alloc(2);
    out.writeUInt16LE(value);
    this.put(out);
  }

  u32(value: number, what: string): void {
    if (!(Number.isInteger(value) && value >= 0 && value <= U32_MAX)) {
      throw malformed(`${what}: ${value} is too large`);
    }
    const out = Buffer.alloc(4);
    out.writeUInt32LE(value);
    this.put(out);
  }

  u64(value: bigint, what: string): void {
    if (value < 0n || value > U64_MAX) {
      throw malformed(`${what}: ${value} does not fit 64 bits`);
    }
    const out = Buffer.alloc(8);
    out.writeBigUInt64LE(value);
    this.put(out);
  }

  str16(value: string, what: string): void {
    const encoded = utf8(value);
    this.u16(encoded.length, what);
    this.put(encoded);
  }

  bytes(): Uint8Array {
    return Buffer.concat(this.chunks);
  }
}

const UUID_HYPHENATED = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const UUID_SIMPLE = /^[0-9a-f]{32}$/i;

/** A UUID's 16 bytes, from the forms Rust's `Uuid::parse_str` takes: hyphenated, simple,
 * braced or `urn:uuid:`. */
function uuidBytes(text: string, what: string): Uint8Array {
  let body = typeof text === "string" ? text : "";
  if (body.startsWith("{") && body.endsWith("}")) {
    body = body.slice(1, -1);
  } else if (body.toLowerCase().startsWith("urn:uuid:")) {
    body = body.slice("urn:uuid:".length);
  }
  if (!UUID_HYPHENATED.test(body) && !(body === text && UUID_SIMPLE.test(body))) {
    throw malformed(`${what}: ${JSON.stringify(text)} is not a uuid`);
  }
  return Buffer.from(body.replaceAll("-", ""), "hex");
}

function hashBytes(value: Uint8Array, what: string): Uint8Array {
  if (value.length !== HASH_BYTES) {
    throw malformed(`${what}: ${value.length} bytes, not ${HASH_BYTES}`);
  }
  return value;
}

function publicKeyBytes(publicKey: Uint8Array | string): Uint8Array {
  const bytes = typeof publicKey === "string" ? fromHex(publicKey.trim()) : publicKey;
  if (bytes === null) {
    throw new TypeError("the public key must be 64 hex digits (Ed25519)");
  }
  if (bytes.length !== PUBLIC_KEY_BYTES) {
    throw new TypeError(`the public key is ${bytes.length} bytes, not ${PUBLIC_KEY_BYTES}`);
  }
  return bytes;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

/** The bytes of an even-length hex string, or null when it is not hex. */
export function fromHex(text: string): Uint8Array | null {
  return /^([0-9a-f]{2})*$/i.test(text) ? Uint8Array.from(Buffer.from(text, "hex")) : null;
}

function malformed(detail: string): ReceiptError {
  return new ReceiptError("malformed", `malformed ${detail}`);
}

/** What a receipt's JSON and an events file are, for the message that refuses other text. */
const RECEIPT_HINT = "the output of `causeway --output json append`";
const EVENTS_HINT = "the output of `causeway --output json get`, `read` or `tail`";

function parseJson(source: string | Uint8Array, what: string, hint: string): unknown {
  const text = typeof source === "string" ? source : new TextDecoder().decode(source);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw malformed(`${what}: not JSON (${(err as Error).message}); expected ${hint}`);
  }
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw malformed(`${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function array(obj: Record<string, unknown>, key: string, what: string, optional = false): Record<string, unknown>[] {
  const value = obj[key];
  if ((value === undefined || value === null) && optional) {
    return [];
  }
  if (!Array.isArray(value)) {
    throw malformed(`${what}.${key} must be an array`);
  }
  return value.map((item, idx) => object(item, `${what}.${key}[${idx}]`));
}

function string(obj: Record<string, unknown>, key: string, what: string): string {
  const value = obj[key];
  if (typeof value !== "string") {
    throw malformed(`${what}.${key} must be a string`);
  }
  return value;
}

/** A non-negative integer; JSON numbers past 2^53 are refused rather than silently rounded. */
function uint(obj: Record<string, unknown>, key: string, what: string): bigint {
  const value = obj[key];
  if (typeof value === "bigint" && value >= 0n && value <= U64_MAX) {
    return value;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw malformed(`${what}.${key} must be a non-negative integer below 2^53`);
  }
  return BigInt(value);
}

function hex(obj: Record<string, unknown>, key: string, what: string): Uint8Array {
  const bytes = fromHex(string(obj, key, what));
  if (bytes === null) {
    throw malformed(`${what}.${key} is not hex`);
  }
  return bytes;
}

function timestampFrom(obj: Record<string, unknown>, what: string): Timestamp {
  const timestamp = object(obj["timestamp"], `${what}.timestamp`);
  let wallMs: bigint;
  try {
    wallMs = wallMsFromRfc3339(string(timestamp, "wall", `${what}.timestamp`));
  } catch (err) {
    if (err instanceof RangeError) {
      throw malformed(`${what}.timestamp.wall: ${err.message}`);
    }
    throw err;
  }
  return { wallMs, logical: Number(uint(timestamp, "logical", `${what}.timestamp`)) };
}

function strings(obj: Record<string, unknown>, key: string, what: string): string[] {
  const value = obj[key] ?? [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
    throw malformed(`${what}.${key} must be an array of strings`);
  }
  return value as string[];
}

function eventFromJson(obj: Record<string, unknown>, what: string): Event {
  const metadata = obj["metadata"] ?? {};
  if (typeof metadata !== "object" || metadata === null || !Object.values(metadata).every((v) => typeof v === "string")) {
    throw malformed(`${what}.metadata must be an object of strings`);
  }
  const payloadText = obj["payload_base64"];
  if (typeof payloadText !== "string") {
    throw malformed(`${what}.payload_base64 is missing: the exact payload bytes are needed`);
  }
  // With all, part or none of its padding, as the CLI reads it.
  const bare = payloadText.replace(/=+$/, "");
  const padded = payloadText.length - bare.length <= 2 ? bare + "=".repeat((4 - (bare.length % 4)) % 4) : "!";
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(padded) || padded.length % 4 !== 0) {
    throw malformed(`${what}.payload_base64 is not valid base64`);
  }
  const payload = Uint8Array.from(Buffer.from(padded, "base64"));
  // The readable copy is what a person looks at: it must be the bytes that are checked.
  if ("payload" in obj) {
    let text: string | null;
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(payload);
    } catch {
      text = null;
    }
    if (obj["payload"] !== text) {
      throw malformed(
        `${what}.payload is not the payload that ${what}.payload_base64 holds: the text shown would not be the bytes checked`,
      );
    }
  }
  const contentType = obj["content_type"] ?? "";
  if (typeof contentType !== "string") {
    throw malformed(`${what}.content_type must be a string`);
  }
  return {
    position: uint(obj, "position", what),
    version: uint(obj, "version", what),
    timestamp: timestampFrom(obj, what),
    id: string(obj, "id", what),
    scope: string(obj, "scope", what),
    entity: string(obj, "entity", what),
    type: string(obj, "type", what),
    tags: strings(obj, "tags", what),
    payload,
    contentType,
    metadata: { ...(metadata as Record<string, string>) },
    causation: strings(obj, "causation", what),
    correlationId: string(obj, "correlation_id", what),
    hash: hex(obj, "hash", what),
  };
}
