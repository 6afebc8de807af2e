"""causeway_client: the Python client of the Causeway event store.

`Client` wraps `causeway.v1.EventStoreService` with typed arguments and results (events.py,
gates.py) and typed exceptions decoded from the server's `google.rpc.Status` details
(errors.py); `Client.subscribe` is an iterator that resumes a dropped stream. `verify_receipt`
checks a receipt offline, byte for byte as the Rust client does (receipt.py). The generated
messages and stubs are `causeway_client.pb`, made from the repository's proto/ when the package
is built.
"""

from causeway_client.client import Append, Client, Subscription
from causeway_client.errors import (
    CausewayError,
    Conflict,
    DataLoss,
    Denied,
    FailedPrecondition,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from causeway_client.events import (
    ANY,
    EXISTS,
    NO_STREAM,
    Condition,
    EntityPage,
    Event,
    Expected,
    Filter,
    Head,
    LogPage,
    NewEvent,
    QueryItem,
    Timestamp,
)
from causeway_client.gates import (
    AllowedTypes,
    CausationExists,
    Cel,
    Gate,
    RateLimit,
    SizeLimit,
    UniqueTag,
)
from causeway_client.receipt import (
    Committed,
    GatePass,
    Receipt,
    ReceiptError,
    load_events,
    load_receipt,
    verify_receipt,
)

__all__ = [
    "ANY",
    "Append",
    "EXISTS",
    "NO_STREAM",
    "AllowedTypes",
    "CausationExists",
    "CausewayError",
    "Cel",
    "Client",
    "Committed",
    "Condition",
    "Conflict",
    "DataLoss",
    "Denied",
    "EntityPage",
    "Event",
    "Expected",
    "FailedPrecondition",
    "Filter",
    "Gate",
    "GatePass",
    "Head",
    "IdempotencyConflict",
    "InvalidArgument",
    "LogPage",
    "NewEvent",
    "NotFound",
    "QueryItem",
    "RateLimit",
    "Receipt",
    "ReceiptError",
    "ResourceExhausted",
    "SizeLimit",
    "Subscription",
    "Timestamp",
    "UniqueTag",
    "Unavailable",
    "load_events",
    "load_receipt",
    "verify_receipt",
]
