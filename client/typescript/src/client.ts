/**
 * `Client`: the typed wrapper over `causeway.v1.EventStoreService`, and `Subscription`, a
 * subscription as an async iterator of events that resumes after a dropped stream.
 *
 * Every call converts its arguments at the edge (events.ts, gates.ts), calls the generated
 * service over gRPC (HTTP/2, connect-node's gRPC transport) with the client's deadline, and turns
 * a failed call into the typed error of errors.ts, so a caller sees `Denied`, `Conflict` or
 * `InvalidArgument` and never a bare `ConnectError`.
 *
 * The subscription contract (server/src/subscribe.rs) is ordered, without duplicates or gaps, so
 * a stream can resume from the last position it accounted for plus one: the last event
 * delivered, or a later `Checkpoint` or `CaughtUp` (everything up to it was delivered or
 * filtered out). A resume after a drop therefore delivers each event exactly once.
 */

import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client as ServiceClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  AppendRequestSchema,
  AppendStreamRequestSchema,
  EventStoreService,
  type AppendRequest,
  type SubscribeRequest,
} from "./gen/causeway/v1/causeway_pb.js";
import { Direction } from "./gen/causeway/v1/event_pb.js";
import { CausewayError, fromConnectError, fromStatus, Unavailable } from "./errors.js";
import {
  conditionToPb,
  eventFromPb,
  expectedToPb,
  filterToPb,
  newEventToPb,
  uint64,
  type Condition,
  type EntityPage,
  type Event,
  type Expected,
  type Filter,
  type Head,
  type LogPage,
  type NewEvent,
  type Uint64,
} from "./events.js";
import { definitionToPb, gateFromPb, type Gate, type GateScope, type Rule } from "./gates.js";
import { Receipt } from "./receipt.js";

/** The deadline of a unary call, in milliseconds, unless the client is given another. */
export const TIMEOUT_MS_DEFAULT = 30_000;
/** Events per page when a read is not given a limit; the server takes 1 to 10,000. */
export const PAGE_EVENTS_DEFAULT = 100;
/** How many times in a row a subscription reconnects after a dropped stream before it gives up. */
export const RESUME_ATTEMPTS_MAX = 10;
/** The wait before the first reconnection, doubled after each failure up to the next bound. */
export const RESUME_BACKOFF_MS_INITIAL = 100;
/** The longest wait between reconnections. */
export const RESUME_BACKOFF_MS_MAX = 2_000;

/** Options of `new Client`. */
export interface ClientOptions {
  /** The deadline of each unary call; `null` for none. */
  readonly timeoutMs?: number | null;
  /** A token sent as `authorization: Bearer <token>` on every call, streams included. */
  readonly token?: string;
}

/** Options of `Client.append` (and, without the key, `Client.dryRun`). */
export interface AppendOptions {
  /** Per-entity version conditions. */
  readonly expected?: readonly Expected[];
  /** A DCB condition. */
  readonly condition?: Condition;
  /** A retry with the same key and content returns the first receipt. */
  readonly idempotencyKey?: string;
  /** Gates to run beyond those bound to the events' scopes and types. */
  readonly gates?: readonly string[];
  /** Allow causation parents that are not in the store. */
  readonly externalCausation?: boolean;
}

/** One append of `Client.appendStream`: its events and what `Client.append` takes as options. */
export interface Append extends AppendOptions {
  readonly events: readonly NewEvent[];
}

/** Options of `Client.readEntity`. */
export interface ReadEntityOptions {
  /** The first version (inclusive); backward from 0 starts at the last event. Default 1. */
  readonly fromVersion?: Uint64;
  readonly backward?: boolean;
  /** At most this many events (1 to 10,000). */
  readonly limit?: number;
}

/** Options of `Client.readLog` and `Client.iterLog`. */
export interface ReadLogOptions {
  readonly filter?: Filter;
  readonly backward?: boolean;
  /** At most this many events a page (1 to 10,000); a forward page never ends inside an append. */
  readonly limit?: number;
}

/** Options of `Client.subscribe`. */
export interface SubscribeOptions {
  readonly filter?: Filter;
  /** Reconnections in a row after a dropped stream before the error is thrown. */
  readonly resumeAttempts?: number;
}

/** A connection to one causewayd over plaintext HTTP/2 (gRPC). `close()` ends it. */
export class Client {
  /** The server's host:port. */
  readonly address: string;
  /** The generated service client, for calls the wrapper does not cover. */
  readonly service: ServiceClient<typeof EventStoreService>;
  private readonly timeoutMs: number | undefined;
  private readonly sessions: Http2SessionManager;

  constructor(address: string, options: ClientOptions = {}) {
    this.address = address;
    const baseUrl = address.includes("://") ? address : `http://${address}`;
    this.timeoutMs = options.timeoutMs === null ? undefined : (options.timeoutMs ?? TIMEOUT_MS_DEFAULT);
    this.sessions = new Http2SessionManager(baseUrl);
    const token = options.token;
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      interceptors:
        token === undefined
          ? []
          : [
              (next) => async (request) => {
                request.header.set("authorization", `Bearer ${token}`);
                return next(request);
              },
            ],
    });
    this.service = createClient(EventStoreService, transport);
  }

  /** Closes the HTTP/2 connection; streams still open fail. */
  close(): void {
    this.sessions.abort();
  }

  /**
   * Appends `events` atomically (consecutive positions) and returns the receipt, once the events
   * are on disk.
   *
   * Throws `Conflict` when an expected version does not hold, `Denied` when a gate (or the DCB
   * condition) refuses, `IdempotencyConflict` when the key was used for other content; nothing is
   * written then. A retry with the same key and content returns the first receipt, so a write
   * whose outcome is unknown can be retried safely.
   */
  async append(events: readonly NewEvent[], options: AppendOptions = {}): Promise<Receipt> {
    const reply = await this.call(() => this.service.append(appendRequest(events, options), this.callOptions()));
    return Receipt.fromPb(reply.receipt!);
  }

  /**
   * Makes `appends` in order over one `AppendStream` call and yields, in the same order, each one's
   * receipt or the typed error that refused it. A refusal is yielded, not thrown: the appends after
   * it are still made, in order, so a condition of one on an earlier one holds. Appends are taken
   * from `appends` as the stream has room (the server keeps up to 64 pending), so an async
   * generator can feed a long stream.
   *
   * Throws a typed error when the call itself ends with an error (a request the server cannot
   * decode, a credential that no longer holds, a server shutting down, a follower's `Unavailable`
   * with the leader's address): the appends not yet answered then have an unknown outcome, and are
   * safe to retry only with idempotency keys.
   */
  async *appendStream(appends: Iterable<Append> | AsyncIterable<Append>): AsyncGenerator<Receipt | CausewayError> {
    async function* requests() {
      for await (const append of appends) {
        yield create(AppendStreamRequestSchema, { append: appendRequest(append.events, append) });
      }
    }
    let answers;
    try {
      answers = this.service.appendStream(requests());
    } catch (error) {
      throw fromConnectError(error);
    }
    const iterator = answers[Symbol.asyncIterator]();
    for (;;) {
      let next;
      try {
        next = await iterator.next();
      } catch (error) {
        throw fromConnectError(error);
      }
      if (next.done) {
        return;
      }
      const answer = next.value.answer;
      if (answer.case === "receipt") {
        yield Receipt.fromPb(answer.value);
      } else if (answer.case === "error") {
        yield fromStatus(answer.value);
      } else {
        throw new CausewayError(Code.Internal, "an AppendStream answer carried neither a receipt nor an error");
      }
    }
  }

  /** Evaluates an append's conditions and gates without writing; the receipt it would get now
   * (unsigned), or the error the append would throw. */
  async dryRun(events: readonly NewEvent[], options: Omit<AppendOptions, "idempotencyKey"> = {}): Promise<Receipt> {
    const append = appendRequest(events, { ...options, idempotencyKey: "" });
    const reply = await this.call(() => this.service.dryRun({ append }, this.callOptions()));
    return Receipt.fromPb(reply.receipt!);
  }

  /** One event by id; `NotFound` when there is none, `InvalidArgument` for a bad id. */
  async get(id: string): Promise<Event> {
    const reply = await this.call(() => this.service.get({ id }, this.callOptions()));
    return eventFromPb(reply.event!);
  }

  /** One page of an entity's events; continue from `nextVersion` until `end`. */
  async readEntity(scope: string, entity: string, options: ReadEntityOptions = {}): Promise<EntityPage> {
    const request = {
      scope,
      entity,
      fromVersion: uint64(options.fromVersion ?? 1, "from_version"),
      direction: direction(options.backward),
      limit: options.limit ?? PAGE_EVENTS_DEFAULT,
    };
    const reply = await this.call(() => this.service.readEntity(request, this.callOptions()));
    return {
      events: reply.events.map(eventFromPb),
      nextVersion: reply.nextVersion,
      end: reply.end,
      appliedPosition: reply.appliedPosition,
    };
  }

  /** One page of the log from `fromPosition` (inclusive; backward from 0 starts at the head),
   * filtered. Continue from `nextPosition` until `end`, or use `iterLog`. */
  async readLog(fromPosition: Uint64 = 1, options: ReadLogOptions = {}): Promise<LogPage> {
    const request = {
      fromPosition: uint64(fromPosition, "from_position"),
      direction: direction(options.backward),
      limit: options.limit ?? PAGE_EVENTS_DEFAULT,
      filter: filterToPb(options.filter),
    };
    const reply = await this.call(() => this.service.readLog(request, this.callOptions()));
    return {
      events: reply.events.map(eventFromPb),
      nextPosition: reply.nextPosition,
      end: reply.end,
      appliedPosition: reply.appliedPosition,
    };
  }

  /** Every matching event from `fromPosition` to the head (as of each page's read), page by page. */
  async *iterLog(fromPosition: Uint64 = 1, options: ReadLogOptions = {}): AsyncGenerator<Event, void, undefined> {
    let position: Uint64 = fromPosition;
    for (;;) {
      const page = await this.readLog(position, options);
      yield* page.events;
      if (page.end) {
        return;
      }
      position = page.nextPosition;
    }
  }

  /** The committed head position (0 when empty) and the log digest there. */
  async head(): Promise<Head> {
    const reply = await this.call(() => this.service.head({}, this.callOptions()));
    return { position: reply.position, digest: reply.digest };
  }

  /** Follows the log from `fromPosition` (inclusive), or from now when null: catch-up from disk,
   * then live. Iterate it with `for await`; a dropped stream resumes from the last position seen
   * (see `Subscription`). */
  subscribe(fromPosition: Uint64 | null = 1, options: SubscribeOptions = {}): Subscription {
    return new Subscription(this, fromPosition, options.filter ?? {}, options.resumeAttempts ?? RESUME_ATTEMPTS_MAX);
  }

  /** Registers (or replaces) the gate `name`; the receipt's position is the gate's version. */
  async registerGate(name: string, rule: Rule, scope: GateScope = {}): Promise<Receipt> {
    const definition = definitionToPb(name, rule, scope);
    const reply = await this.call(() => this.service.registerGate({ definition }, this.callOptions()));
    return Receipt.fromPb(reply.receipt!);
  }

  /** The gates in force, by name. */
  async listGates(): Promise<Gate[]> {
    const reply = await this.call(() => this.service.listGates({}, this.callOptions()));
    return reply.gates.map(gateFromPb);
  }

  /** Removes the gate `name`; `NotFound` when there is none. */
  async removeGate(name: string): Promise<Receipt> {
    const reply = await this.call(() => this.service.removeGate({ name }, this.callOptions()));
    return Receipt.fromPb(reply.receipt!);
  }

  private callOptions(): { timeoutMs?: number } {
    return this.timeoutMs === undefined ? {} : { timeoutMs: this.timeoutMs };
  }

  private async call<T>(send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      // Only a failed call becomes a typed error; an invalid argument (a negative version) is
      // the caller's bug and keeps its own type.
      throw err instanceof ConnectError ? fromConnectError(err) : err;
    }
  }
}

/**
 * The events a subscription delivers, in position order, each once, as an async iterator (it can
 * be iterated once).
 *
 * When the stream drops (UNAVAILABLE: a lost connection, a restarting or draining server; or
 * CANCELLED without `close()`, as http/2 reports some lost connections), it reconnects from
 * `position + 1` after a backoff, at most `resumeAttempts` times in a row (the
 * count restarts once a reconnected stream delivers a message); any other failure, or one drop
 * too many, is thrown as the typed error. `close()`, or leaving a `for await` loop, cancels it.
 */
export class Subscription implements AsyncIterable<Event> {
  /** The last position accounted for (delivered, or skipped by the filter as a checkpoint or
   * catch-up said); 0 before any. */
  position: bigint;
  /** True once the catch-up phase ended; live events follow. */
  caughtUp = false;
  /** How many times the stream was resumed after a drop. */
  resumes = 0;
  private readonly client: Client;
  private readonly filter: ReturnType<typeof filterToPb>;
  private readonly fromNow: boolean;
  private readonly resumeAttempts: number;
  private readonly abort = new AbortController();
  private readonly events: AsyncGenerator<Event, void, undefined>;

  constructor(client: Client, fromPosition: Uint64 | null, filter: Filter, resumeAttempts: number) {
    const from = fromPosition === null ? null : uint64(fromPosition, "from_position");
    if (from !== null && from < 1n) {
      throw new RangeError(`from_position ${from} is below 1; positions start at 1`);
    }
    this.client = client;
    this.filter = filterToPb(filter);
    this.fromNow = from === null;
    this.position = from === null ? 0n : from - 1n;
    this.resumeAttempts = resumeAttempts;
    this.events = this.run();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Event, void, undefined> {
    return this.events;
  }

  /** Cancels the stream; iteration then ends. */
  close(): void {
    this.abort.abort();
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.abort.signal.aborted;
  }

  private request(): Omit<SubscribeRequest, "$typeName"> {
    if (this.fromNow && this.position === 0n) {
      // Nothing seen yet: a resume can only start from now again (events committed while
      // disconnected before the first message are not delivered).
      return { start: { case: "fromNow", value: true }, filter: this.filter };
    }
    return { start: { case: "fromPosition", value: this.position + 1n }, filter: this.filter };
  }

  private async *run(): AsyncGenerator<Event, void, undefined> {
    let failures = 0;
    let backoffMs = RESUME_BACKOFF_MS_INITIAL;
    try {
      while (!this.closed) {
        try {
          const stream = this.client.service.subscribe(this.request(), { signal: this.abort.signal });
          for await (const message of stream) {
            failures = 0;
            backoffMs = RESUME_BACKOFF_MS_INITIAL;
            const { case: kind, value } = message.message;
            if (kind === "events") {
              for (const event of value.events) {
                if (event.position <= this.position) {
                  continue;
                }
                this.position = event.position;
                yield eventFromPb(event);
              }
            } else if (kind === "caughtUp") {
              this.caughtUp = true;
              this.position = max(this.position, value.position);
            } else if (kind === "checkpoint") {
              this.position = max(this.position, value.position);
            }
          }
          return;
        } catch (err) {
          if (this.closed) {
            return;
          }
          if (!(err instanceof ConnectError)) {
            throw err;
          }
          const error: CausewayError = fromConnectError(err);
          // This subscription did not cancel the stream (checked above), so a stream that ends
          // cancelled was cut under it: http/2 reports a dropped connection as CANCEL on its
          // open streams at times, instead of a connection error.
          const dropped = error instanceof Unavailable || error.statusCode === Code.Canceled;
          if (!dropped || failures >= this.resumeAttempts) {
            throw error;
          }
        }
        failures += 1;
        this.resumes += 1;
        try {
          await sleep(backoffMs, undefined, { signal: this.abort.signal });
        } catch {
          return;
        }
        backoffMs = Math.min(backoffMs * 2, RESUME_BACKOFF_MS_MAX);
      }
    } finally {
      // Leaving the loop early (break, return, a throw in the consumer) cancels the stream.
      this.abort.abort();
    }
  }
}

function appendRequest(events: readonly NewEvent[], options: AppendOptions): AppendRequest {
  return create(AppendRequestSchema, {
    events: events.map(newEventToPb),
    expected: (options.expected ?? []).map(expectedToPb),
    condition: options.condition === undefined ? undefined : conditionToPb(options.condition),
    idempotencyKey: options.idempotencyKey ?? "",
    gates: [...(options.gates ?? [])],
    externalCausation: options.externalCausation ?? false,
  });
}

function direction(backward: boolean | undefined): Direction {
  return backward ? Direction.BACKWARD : Direction.FORWARD;
}

function max(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

export { Code };
