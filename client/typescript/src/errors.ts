/**
 * Typed errors for a failed call, decoded from the `google.rpc.Status` details the server sends
 * in `grpc-status-details-bin` (connect parses the trailer; `ConnectError.findDetails` unpacks
 * the ErrorInfo, BadRequest and RetryInfo messages generated from
 * proto/google/rpc/error_details.proto).
 *
 * The server maps every failure in one place (server/src/status.rs), so a caller branches on
 * classes and fields rather than on message text:
 *
 * - a gate denial is FAILED_PRECONDITION with an ErrorInfo whose reason is the gate's code
 *   (`TAG_TAKEN`, `CEL_FALSE`, ...) and whose metadata holds `gate` plus the gate's facts: `Denied`;
 * - an expected-version conflict is the same status with reason `VERSION_CONFLICT`: `Conflict`;
 * - a bad field is INVALID_ARGUMENT with a BadRequest naming the field path, or an ErrorInfo
 *   `LIMIT_EXCEEDED` naming the bound: `InvalidArgument`;
 * - an idempotency key reused with other content is ALREADY_EXISTS (`IdempotencyConflict`); an
 *   unknown id NOT_FOUND; overload RESOURCE_EXHAUSTED; a node that cannot serve now, or a
 *   follower, UNAVAILABLE with the leader's address when known; damaged data DATA_LOSS.
 *
 * Every error keeps the status code, the message, the raw reason and metadata, and the RetryInfo
 * delay, so a reason this module does not know yet still reaches the caller.
 */

import type { Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

/** The `ErrorInfo.domain` of every detail this server attaches. */
export const ERROR_DOMAIN = "causeway";
/** The reason of an expected-version conflict. */
export const REASON_VERSION_CONFLICT = "VERSION_CONFLICT";
/** The reason of a request over a documented bound. */
export const REASON_LIMIT_EXCEEDED = "LIMIT_EXCEEDED";
/** The reason of a write that may or may not have been applied; retry with the same key. */
export const REASON_OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN";
/** Node error codes of a connection lost under a call. connect-node reports them as ABORTED or
 * INTERNAL (a server's view of a client hanging up); for a client the call is UNAVAILABLE, as
 * gRPC's own clients report it, so a subscription resumes and a caller retries. */
const CONNECTION_LOST_CODES = new Set([
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_INVALID_SESSION",
]);

export { Code };

/** A call the server refused or could not serve. */
export class CausewayError extends Error {
  /** The gRPC status code. */
  readonly statusCode: Code;
  /** The ErrorInfo reason, or "" when the status carried none. */
  readonly reason: string;
  /** The ErrorInfo metadata (empty when none). */
  readonly metadata: Readonly<Record<string, string>>;
  /** How long the server asks a client to wait before sending the same request again (its
   * RetryInfo), or null when the refusal is not worth retrying as it stands. */
  readonly retryAfterMs: number | null;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(message);
    this.name = new.target.name;
    this.statusCode = statusCode;
    this.reason = detail.reason ?? "";
    this.metadata = { ...(detail.metadata ?? {}) };
    this.retryAfterMs = detail.retryAfterMs ?? null;
  }

  override toString(): string {
    return `${this.name} (${Code[this.statusCode]}): ${this.message}`;
  }
}

/** What the status details said, as `fromConnectError` passes them to a constructor. */
export interface Detail {
  readonly reason?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly retryAfterMs?: number | null;
  readonly violations?: ReadonlyArray<readonly [string, string]>;
}

/** A request field is invalid or over a bound; nothing was written. */
export class InvalidArgument extends CausewayError {
  /** The first invalid field's path in the request (`events[2].causation[0]`), or null. */
  readonly field: string | null;
  /** Every (field, description) pair of the BadRequest detail. */
  readonly violations: ReadonlyArray<readonly [string, string]>;
  /** The bound's name (`APPEND_BYTES_MAX`) for a LIMIT_EXCEEDED refusal, else null. */
  readonly limit: string | null;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(statusCode, message, detail);
    this.violations = [...(detail.violations ?? [])];
    this.field = this.violations[0]?.[0] ?? null;
    this.limit = this.reason ? (this.metadata["limit"] ?? null) : null;
  }
}

/** The request cannot be carried out in the store's current state; nothing was written. */
export class FailedPrecondition extends CausewayError {}

/** A gate refused the append; nothing was written. */
export class Denied extends FailedPrecondition {
  /** The gate's name. */
  readonly gate: string;
  /** The gate's denial code (`TAG_TAKEN`, `CEL_FALSE`, ...); the gRPC code is `statusCode`. */
  readonly code: string;
  /** What the gate saw, as it named it (`{tag: "email:a@example.com"}`). */
  readonly facts: Readonly<Record<string, string>>;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(statusCode, message, detail);
    this.gate = this.metadata["gate"] ?? "";
    this.code = this.reason;
    this.facts = Object.fromEntries(Object.entries(this.metadata).filter(([key]) => key !== "gate"));
  }
}

/** An expected version did not hold; nothing was written. */
export class Conflict extends FailedPrecondition {
  readonly scope: string;
  readonly entity: string;
  /** The condition as the server states it (`3`, `no stream`, `exists`). */
  readonly expected: string;
  /** The entity's version now (0 when it has no events), or null when not stated. */
  readonly actual: bigint | null;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(statusCode, message, detail);
    this.scope = this.metadata["scope"] ?? "";
    this.entity = this.metadata["entity"] ?? "";
    this.expected = this.metadata["expected"] ?? "";
    const actual = this.metadata["actual"] ?? "";
    this.actual = /^[0-9]+$/.test(actual) ? BigInt(actual) : null;
  }
}

/** The idempotency key was used before for an append with other content. */
export class IdempotencyConflict extends CausewayError {
  /** The key. */
  readonly key: string;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(statusCode, message, detail);
    this.key = this.metadata["idempotency_key"] ?? "";
  }
}

/** The event or gate named does not exist. */
export class NotFound extends CausewayError {}

/** The server is at capacity (or a store quota is full); retry after `retryAfterMs`. */
export class ResourceExhausted extends CausewayError {
  /** Which bound (`pool_queue`, `max_subscriptions`, `GATES_MAX`), when named. */
  readonly limit: string | null;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(statusCode, message, detail);
    this.limit = this.metadata["limit"] ?? null;
  }
}

/** The node cannot serve now: unreachable, shutting down, or not the cluster's leader. */
export class Unavailable extends CausewayError {
  /** The leader's address when a follower named it, else null. */
  readonly leaderAddress: string | null;
  /** True when a write may or may not have been applied; retrying it with the same
   * idempotency key applies it exactly once. */
  readonly outcomeUnknown: boolean;

  constructor(statusCode: Code, message: string, detail: Detail = {}) {
    super(statusCode, message, detail);
    this.leaderAddress = this.metadata["leader_address"] ?? null;
    this.outcomeUnknown = this.reason === REASON_OUTCOME_UNKNOWN;
  }
}

/** The server found damaged data; an operator needs to look at the node. */
export class DataLoss extends CausewayError {}

/** The typed error for a failed call (see the module overview for the mapping). */
export function fromConnectError(error: unknown): CausewayError {
  if (error instanceof CausewayError) {
    return error;
  }
  const connect = ConnectError.from(error);
  const info = connect.findDetails(ErrorInfoSchema)[0];
  const retry = connect.findDetails(RetryInfoSchema)[0];
  const violations = connect
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) => badRequest.fieldViolations.map((v) => [v.field, v.description] as const));
  const detail: Detail = {
    reason: info?.reason ?? "",
    metadata: info?.metadata ?? {},
    retryAfterMs: retry?.retryDelay ? durationMs(retry.retryDelay) : null,
    violations,
  };
  const code = connectionLost(connect) ? Code.Unavailable : connect.code;
  const message = connect.rawMessage;
  switch (code) {
    case Code.InvalidArgument:
      return new InvalidArgument(code, message, detail);
    case Code.FailedPrecondition:
      if (detail.reason === REASON_VERSION_CONFLICT) {
        return new Conflict(code, message, detail);
      }
      return detail.reason ? new Denied(code, message, detail) : new FailedPrecondition(code, message, detail);
    case Code.AlreadyExists:
      return new IdempotencyConflict(code, message, detail);
    case Code.NotFound:
      return new NotFound(code, message, detail);
    case Code.ResourceExhausted:
      return new ResourceExhausted(code, message, detail);
    case Code.Unavailable:
      return new Unavailable(code, message, detail);
    case Code.DataLoss:
      return new DataLoss(code, message, detail);
    default:
      return new CausewayError(code, message, detail);
  }
}

/**
 * The typed error for a refusal carried in a message, as `AppendStream` answers a refused append in
 * place: the same mapping as for a failed call.
 */
export function fromStatus(status: Status): CausewayError {
  const error = new ConnectError(status.message, status.code in Code ? (status.code as Code) : Code.Unknown);
  for (const detail of status.details) {
    error.details.push({ type: detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1), value: detail.value });
  }
  return fromConnectError(error);
}

/** True when the call failed because its connection was lost, not because the server said so. */
function connectionLost(error: ConnectError): boolean {
  if (error.code !== Code.Aborted && error.code !== Code.Internal && error.code !== Code.Unknown) {
    return false;
  }
  const seen = new Set<unknown>();
  for (let cause: unknown = error.cause; cause instanceof Error && !seen.has(cause); cause = cause.cause) {
    seen.add(cause);
    const nodeCode = (cause as { code?: unknown }).code;
    if (typeof nodeCode === "string" && CONNECTION_LOST_CODES.has(nodeCode)) {
      return true;
    }
  }
  return false;
}

function durationMs(duration: Duration): number {
  return Number(duration.seconds) * 1000 + Math.ceil(duration.nanos / 1_000_000);
}
