/**
 * @causeway/client: the TypeScript client of the Causeway event store.
 *
 * `Client` wraps `causeway.v1.EventStoreService` with typed arguments and results (events.ts,
 * gates.ts) and typed errors decoded from the server's `google.rpc.Status` details (errors.ts);
 * `Client.subscribe` is an async iterator that resumes a dropped stream. `verifyReceipt` checks
 * a receipt offline, byte for byte as the Rust and Python clients do (receipt.ts). The generated
 * messages are built from the repository's proto/ into src/gen when the package is built.
 */

export {
  Client,
  Subscription,
  PAGE_EVENTS_DEFAULT,
  RESUME_ATTEMPTS_MAX,
  TIMEOUT_MS_DEFAULT,
  type Append,
  type AppendOptions,
  type ClientOptions,
  type ReadEntityOptions,
  type ReadLogOptions,
  type SubscribeOptions,
} from "./client.js";
export {
  CausewayError,
  Code,
  Conflict,
  DataLoss,
  Denied,
  FailedPrecondition,
  IdempotencyConflict,
  InvalidArgument,
  NotFound,
  ResourceExhausted,
  Unavailable,
  fromConnectError,
  fromStatus,
} from "./errors.js";
export {
  ANY,
  EXISTS,
  NO_STREAM,
  NewEvent,
  eventJson,
  rfc3339,
  wallDate,
  wallMsFrom,
  wallMsFromRfc3339,
  type Condition,
  type EntityPage,
  type Event,
  type Expected,
  type Filter,
  type Head,
  type LogPage,
  type NewEventFields,
  type QueryItem,
  type Timestamp,
  type TimestampInput,
  type Uint64,
} from "./events.js";
export {
  allowedTypes,
  causationExists,
  cel,
  rateLimit,
  sizeLimit,
  uniqueTag,
  type Gate,
  type GateScope,
  type Rule,
} from "./gates.js";
export {
  Receipt,
  ReceiptError,
  canonicalBytes,
  eventHash,
  loadEvents,
  loadReceipt,
  verifyReceipt,
  type Committed,
  type EventsInput,
  type GatePass,
  type ReceiptErrorKind,
  type ReceiptInput,
  type ReceiptJson,
  type VerifyOptions,
} from "./receipt.js";
