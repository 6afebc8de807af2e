/**
 * The values a caller writes and reads: events, filters, conditions, pages, and the head.
 *
 * Plain objects, converted to and from the generated messages (`src/gen`) here, at the edge, so
 * the rest of the package and its callers never build protobuf by hand. Field meanings are the
 * proto's (proto/causeway/v1/event.proto): the proto is the documentation, these types only give
 * it TypeScript shapes.
 *
 * - Positions and versions are uint64 on the wire, so they come back as `bigint` (exact past
 *   2^53), and so do wall times in milliseconds (`Timestamp.wallMs`); arguments take a `number`
 *   or a `bigint`. On the wire a wall time is a `google.protobuf.Timestamp` in whole
 *   milliseconds: `wallMsFrom` refuses one that is not, nothing is rounded; `wallDate` and
 *   `rfc3339` give it to people.
 * - A payload is bytes on the wire; `NewEvent` also takes a string (encoded as UTF-8) and
 *   `NewEvent.json` any JSON-serialisable value, with content type `application/json`.
 */

import { create } from "@bufbuild/protobuf";
import { TimestampSchema, type Timestamp as TimestampPb } from "@bufbuild/protobuf/wkt";
import {
  DcbConditionSchema,
  ExpectedKind,
  ExpectedVersionSchema,
  type DcbCondition,
  type ExpectedVersion,
} from "./gen/causeway/v1/causeway_pb.js";
import {
  FilterSchema,
  HybridTimestampSchema,
  NewEventSchema,
  QueryItemSchema,
  type Event as EventPb,
  type Filter as FilterPb,
  type HybridTimestamp,
  type NewEvent as NewEventPb,
} from "./gen/causeway/v1/event_pb.js";

/** Expected version meaning "no condition". */
export const ANY = "any";
/** Expected version meaning "the entity has no events". */
export const NO_STREAM = "no-stream";
/** Expected version meaning "the entity has at least one event". */
export const EXISTS = "exists";

/** An integer argument that is a uint64 on the wire. */
export type Uint64 = number | bigint;

/** A hybrid logical clock timestamp: wall milliseconds plus a counter within the millisecond. */
export interface Timestamp {
  /** Milliseconds since the Unix epoch. */
  readonly wallMs: bigint;
  /** Orders events within one millisecond (at most 65,535). */
  readonly logical: number;
}

/** An event to append; the store assigns position, version, timestamp and hash. */
export interface NewEvent {
  /** The isolation boundary, such as a tenant. */
  readonly scope: string;
  /** The stream key inside the scope. */
  readonly entity: string;
  /** The event type. */
  readonly type: string;
  /** The body: bytes, or a string sent as UTF-8. Empty when absent. */
  readonly payload?: Uint8Array | string;
  /** Strings for queries that cross entities; unique within the event. */
  readonly tags?: readonly string[];
  /** The payload's media type; may be empty. */
  readonly contentType?: string;
  /** Free-form string pairs. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Ids of the events that caused this one. */
  readonly causation?: readonly string[];
  /** The conversation or saga; the server derives it when empty. */
  readonly correlationId?: string;
  /** The event's id; the server assigns a UUIDv7 when empty. */
  readonly id?: string;
}

/** The fields of a `NewEvent` beyond scope, entity and type, for `NewEvent.json`. */
export type NewEventFields = Omit<NewEvent, "scope" | "entity" | "type" | "payload">;

export const NewEvent = {
  /** An event whose payload is `data` as compact JSON, content type application/json. */
  json(scope: string, entity: string, type: string, data: unknown, fields: NewEventFields = {}): NewEvent {
    return { ...fields, scope, entity, type, payload: JSON.stringify(data), contentType: "application/json" };
  },
};

/** A committed event, as the server returns it. */
export interface Event {
  /** Global position, gapless from 1. */
  readonly position: bigint;
  /** Version within scope and entity, dense from 1. */
  readonly version: bigint;
  /** When it was committed. */
  readonly timestamp: Timestamp;
  readonly id: string;
  readonly scope: string;
  readonly entity: string;
  readonly type: string;
  /** The tags, in the order given. */
  readonly tags: readonly string[];
  readonly payload: Uint8Array;
  readonly contentType: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly causation: readonly string[];
  readonly correlationId: string;
  /** blake3 over the event's canonical bytes and the previous hash of its entity (32 bytes). */
  readonly hash: Uint8Array;
}

/** The payload of `event` decoded as UTF-8 JSON. */
export function eventJson(event: Pick<Event, "payload">): unknown {
  return JSON.parse(new TextDecoder().decode(event.payload));
}

/** One item of a DCB query: any of `types` (any type when empty) carrying every one of `tags`. */
export interface QueryItem {
  readonly types?: readonly string[];
  readonly tags?: readonly string[];
}

/** Which events a read or a subscription returns; the empty filter matches every event. */
export interface Filter {
  /** Only these scopes; all when empty. */
  readonly scopes?: readonly string[];
  /** Only entities starting with this. */
  readonly entityPrefix?: string;
  /** A DCB query: an event matches when it matches any item. */
  readonly items?: readonly QueryItem[];
  /** Only events at or after this timestamp. */
  readonly since?: TimestampInput;
  /**
   * Only events before this timestamp. A subscription with it ends once the log's newest event
   * is at or past it.
   */
  readonly until?: TimestampInput;
}

/** A timestamp as an argument. */
export interface TimestampInput {
  readonly wallMs: Uint64;
  readonly logical?: number;
}

/** A version condition on one entity: an exact version, or ANY, NO_STREAM or EXISTS. */
export interface Expected {
  readonly scope: string;
  readonly entity: string;
  readonly version: Uint64 | typeof ANY | typeof NO_STREAM | typeof EXISTS;
}

/** A DCB condition: refuse the append if an event matching `query` exists after
 * `afterPosition` (the position the caller's decision was based on). */
export interface Condition {
  readonly query: Filter;
  readonly afterPosition: Uint64;
}

/** One page of an entity's events; continue from `nextVersion` until `end`. */
export interface EntityPage {
  readonly events: Event[];
  readonly nextVersion: bigint;
  readonly end: boolean;
  /** The head of the node that answered when it read. */
  readonly appliedPosition: bigint;
}

/** One page of the log; continue from `nextPosition` until `end`. */
export interface LogPage {
  readonly events: Event[];
  readonly nextPosition: bigint;
  readonly end: boolean;
  /** The head of the node that answered when it read. */
  readonly appliedPosition: bigint;
}

/** The committed head: the last position (0 when empty) and the log digest there. */
export interface Head {
  readonly position: bigint;
  readonly digest: Uint8Array;
}

/** A uint64 argument as the wire's bigint; a negative or fractional number is a caller's bug. */
export function uint64(value: Uint64, what: string): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`${what} ${value} is not an integer`);
  }
  const big = BigInt(value);
  if (big < 0n || big >= 1n << 64n) {
    throw new RangeError(`${what} ${value} does not fit a uint64`);
  }
  return big;
}

/** Nanoseconds in one millisecond, the hybrid clock's resolution. */
const NANOS_PER_MS = 1_000_000;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

/** The wire's timestamp; throws a RangeError when its wall time is not whole milliseconds from
 * the epoch on, which no server sends. An absent timestamp or wall time is the epoch. */
export function timestampFromPb(message: HybridTimestamp | undefined): Timestamp {
  const wall = message?.wall;
  return { wallMs: wall ? wallMsFrom(wall.seconds, wall.nanos) : 0n, logical: message?.logical ?? 0 };
}

/** Milliseconds since the epoch from a Timestamp's parts; a RangeError unless they are whole
 * milliseconds, not before the epoch. Nothing is rounded. */
export function wallMsFrom(seconds: bigint, nanos: number): bigint {
  if (seconds < 0n) {
    throw new RangeError(`wall time seconds ${seconds} is before the epoch`);
  }
  if (!Number.isInteger(nanos) || nanos < 0 || nanos >= 1_000_000_000 || nanos % NANOS_PER_MS !== 0) {
    throw new RangeError(`wall time nanos ${nanos} is not whole milliseconds below one second`);
  }
  return seconds * 1000n + BigInt(nanos / NANOS_PER_MS);
}

/** A timestamp's wall time as a Date (exact: a Date keeps milliseconds). */
export function wallDate(timestamp: Timestamp): Date {
  return new Date(Number(timestamp.wallMs));
}

/** Milliseconds since the epoch as RFC 3339 in UTC with milliseconds (`2023-11-14T22:13:20.123Z`),
 * as the CLI and the console write it. */
export function rfc3339(wallMs: bigint): string {
  return new Date(Number(wallMs)).toISOString();
}

/** Milliseconds since the epoch from an RFC 3339 time, exactly; a RangeError when it is not
 * RFC 3339, not whole milliseconds, or before the epoch. */
export function wallMsFromRfc3339(text: string): bigint {
  const match = RFC3339.exec(text);
  if (match === null) {
    throw new RangeError(`${JSON.stringify(text)} is not an RFC 3339 time`);
  }
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const fraction = match[7] ?? "";
  const offset = match[8]!;
  let offsetMinutes = 0;
  if (offset !== "Z" && offset !== "z") {
    const sign = offset.startsWith("-") ? -1 : 1;
    offsetMinutes = sign * (Number(offset.slice(1, 3)) * 60 + Number(offset.slice(4, 6)));
  }
  const localMs = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(localMs);
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) {
    throw new RangeError(`${JSON.stringify(text)} is not a calendar date`);
  }
  const seconds = (localMs - offsetMinutes * 60_000) / 1000;
  return wallMsFrom(BigInt(seconds), Number(fraction.padEnd(9, "0")));
}

function wallToPb(wallMs: bigint): TimestampPb {
  return create(TimestampSchema, { seconds: wallMs / 1000n, nanos: Number(wallMs % 1000n) * NANOS_PER_MS });
}

function timestampToPb(value: TimestampInput): HybridTimestamp {
  return create(HybridTimestampSchema, { wall: wallToPb(uint64(value.wallMs, "wallMs")), logical: value.logical ?? 0 });
}

export function newEventToPb(event: NewEvent): NewEventPb {
  const payload = typeof event.payload === "string" ? new TextEncoder().encode(event.payload) : (event.payload ?? new Uint8Array());
  return create(NewEventSchema, {
    id: event.id ?? "",
    scope: event.scope,
    entity: event.entity,
    type: event.type,
    tags: [...(event.tags ?? [])],
    payload,
    contentType: event.contentType ?? "",
    metadata: { ...(event.metadata ?? {}) },
    causation: [...(event.causation ?? [])],
    correlationId: event.correlationId ?? "",
  });
}

export function eventFromPb(message: EventPb): Event {
  return {
    position: message.position,
    version: message.version,
    timestamp: timestampFromPb(message.timestamp),
    id: message.id,
    scope: message.scope,
    entity: message.entity,
    type: message.type,
    tags: [...message.tags],
    payload: message.payload,
    contentType: message.contentType,
    metadata: { ...message.metadata },
    causation: [...message.causation],
    correlationId: message.correlationId,
    hash: message.hash,
  };
}

export function filterToPb(filter: Filter = {}): FilterPb {
  return create(FilterSchema, {
    scopes: [...(filter.scopes ?? [])],
    entityPrefix: filter.entityPrefix ?? "",
    items: (filter.items ?? []).map((item) =>
      create(QueryItemSchema, { types: [...(item.types ?? [])], tags: [...(item.tags ?? [])] }),
    ),
    since: filter.since === undefined ? undefined : timestampToPb(filter.since),
    until: filter.until === undefined ? undefined : timestampToPb(filter.until),
  });
}

export function expectedToPb(expected: Expected): ExpectedVersion {
  const { scope, entity, version } = expected;
  const kinds: Record<string, ExpectedKind> = {
    [ANY]: ExpectedKind.ANY,
    [NO_STREAM]: ExpectedKind.NO_STREAM,
    [EXISTS]: ExpectedKind.EXISTS,
  };
  if (typeof version === "string") {
    const kind = kinds[version];
    if (kind === undefined) {
      throw new RangeError(`expected version ${JSON.stringify(version)} is not one of ${Object.keys(kinds).join(", ")}`);
    }
    return create(ExpectedVersionSchema, { scope, entity, kind });
  }
  return create(ExpectedVersionSchema, { scope, entity, kind: ExpectedKind.EXACT, version: uint64(version, "expected version") });
}

export function conditionToPb(condition: Condition): DcbCondition {
  return create(DcbConditionSchema, {
    query: filterToPb(condition.query),
    afterPosition: uint64(condition.afterPosition, "after_position"),
  });
}
