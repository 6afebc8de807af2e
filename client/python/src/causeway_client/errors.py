"""Typed exceptions for a failed call, decoded from the `google.rpc.Status` the server sends.

The server maps every failure in one place (server/src/status.rs) and attaches structured
details, so a caller branches on types and fields rather than on message text:

- a gate denial is FAILED_PRECONDITION with a `google.rpc.ErrorInfo` whose reason is the gate's
  code (`TAG_TAKEN`, `CEL_FALSE`, ...) and whose metadata holds `gate` plus the gate's facts:
  `Denied(gate, code, facts)`;
- an expected-version conflict is the same status with reason `VERSION_CONFLICT` and metadata
  `scope`, `entity`, `expected`, `actual`: `Conflict`;
- a bad request field is INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field path
  (`events[0].causation[0]`), or with an ErrorInfo `LIMIT_EXCEEDED` naming the bound:
  `InvalidArgument`;
- an idempotency key reused with other content is ALREADY_EXISTS (`IdempotencyConflict`); an
  unknown id NOT_FOUND; overload RESOURCE_EXHAUSTED; a node that cannot serve now, or a follower,
  UNAVAILABLE with the leader's address when known; damaged data DATA_LOSS.

Every exception keeps the status code, the message, and the raw reason and metadata, so a reason
this module does not know yet still reaches the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2

#: The `ErrorInfo.domain` of every detail this server attaches.
ERROR_DOMAIN = "causeway"
#: The reason of an expected-version conflict.
REASON_VERSION_CONFLICT = "VERSION_CONFLICT"
#: The reason of a request over a documented bound.
REASON_LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
#: The reason of a request refused because the server is at capacity.
REASON_OVERLOADED = "OVERLOADED"
#: The reason of a request a cluster follower does not serve.
REASON_NOT_LEADER = "NOT_LEADER"
#: The reason of a write that may or may not have been applied; retry with the same key.
REASON_OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
#: The reason of an idempotency key reused with other content.
REASON_IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
#: The trailer that carries the encoded `google.rpc.Status`.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class CausewayError(Exception):
    """A call the server refused or could not serve.

    Attributes:
        status_code: the gRPC status code.
        message: the server's message (lowercase, with the values that matter).
        reason: the ErrorInfo reason, or "" when the status carried none.
        metadata: the ErrorInfo metadata (empty when none).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return f"{self.status_code.name}: {self.message}"


class InvalidArgument(CausewayError):
    """A request field is invalid or over a bound; nothing was written.

    Attributes:
        field: the first invalid field's path in the request (`events[2].causation[0]`), or
            None when the server named no field (the message then says what is wrong).
        violations: every (field, description) pair of the `google.rpc.BadRequest` detail.
        limit: the bound's name (`APPEND_BYTES_MAX`) for a LIMIT_EXCEEDED refusal, else None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(code, message, reason, metadata)
        self.violations = list(violations or [])
        self.field: str | None = self.violations[0][0] if self.violations else None
        self.limit: str | None = self.metadata.get("limit") if reason else None


class FailedPrecondition(CausewayError):
    """The request cannot be carried out in the store's current state; nothing was written."""


class Denied(FailedPrecondition):
    """A gate refused the append; nothing was written.

    Attributes:
        gate: the gate's name.
        code: the gate's denial code (`TAG_TAKEN`, `CEL_FALSE`, `RATE_LIMITED`, ...); the gRPC
            code is `status_code` (FAILED_PRECONDITION).
        facts: what the gate saw, as it named it (`{"tag": "email:a@example.com"}`).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        metadata: Mapping[str, str],
    ) -> None:
        super().__init__(code, message, reason, metadata)
        self.gate = self.metadata.get("gate", "")
        self.code = reason
        self.facts = {key: value for key, value in self.metadata.items() if key != "gate"}


class Conflict(FailedPrecondition):
    """An expected version did not hold; nothing was written.

    Attributes:
        scope, entity: the entity whose condition failed.
        expected: the condition as the server states it (`3`, `no stream`, `exists`).
        actual: the entity's version now (0 when it has no events).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        metadata: Mapping[str, str],
    ) -> None:
        super().__init__(code, message, reason, metadata)
        self.scope = self.metadata.get("scope", "")
        self.entity = self.metadata.get("entity", "")
        self.expected = self.metadata.get("expected", "")
        actual = self.metadata.get("actual", "")
        self.actual: int | None = int(actual) if actual.isdigit() else None


class IdempotencyConflict(CausewayError):
    """The idempotency key was used before for an append with other content.

    Attributes:
        key: the key.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, message, reason, metadata)
        self.key = self.metadata.get("idempotency_key", "")


class NotFound(CausewayError):
    """The event or gate named does not exist."""


class ResourceExhausted(CausewayError):
    """The server is at capacity (or a store quota is full); retry later.

    Attributes:
        limit: which bound (`pool_queue`, `max_subscriptions`, `GATES_MAX`), when named.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, message, reason, metadata)
        self.limit: str | None = self.metadata.get("limit")


class Unavailable(CausewayError):
    """The node cannot serve now: unreachable, shutting down, or not the cluster's leader.

    Attributes:
        leader_address: the leader's address when a follower named it, else None.
        outcome_unknown: True when a write may or may not have been applied; retrying it with
            the same idempotency key applies it exactly once.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, message, reason, metadata)
        self.leader_address: str | None = self.metadata.get("leader_address")
        self.outcome_unknown = reason == REASON_OUTCOME_UNKNOWN


class DataLoss(CausewayError):
    """The server found damaged data; an operator needs to look at the node."""


def status_details(error: grpc.RpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a failed call carried in its trailers, or None."""
    trailers = error.trailing_metadata() if isinstance(error, grpc.Call) else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def from_rpc_error(error: grpc.RpcError) -> CausewayError:
    """The typed exception for a failed call (see the module overview for the mapping)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    return _typed(code, message, status_details(error))


#: gRPC's status codes by number, as a `google.rpc.Status` message carries them.
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> CausewayError:
    """The typed exception for a refusal carried in a message, as `AppendStream` answers a
    refused append in place: the same mapping as for a failed call."""
    return _typed(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message, status)


def _typed(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> CausewayError:
    reason, metadata, violations = "", {}, []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and not reason:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [(v.field, v.description) for v in bad_request.field_violations]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(code, message, reason, metadata, violations)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if reason == REASON_VERSION_CONFLICT:
            return Conflict(code, message, reason, metadata)
        if reason:
            return Denied(code, message, reason, metadata)
        return FailedPrecondition(code, message, reason, metadata)
    by_code: dict[grpc.StatusCode, type[CausewayError]] = {
        grpc.StatusCode.ALREADY_EXISTS: IdempotencyConflict,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
        grpc.StatusCode.UNAVAILABLE: Unavailable,
        grpc.StatusCode.DATA_LOSS: DataLoss,
    }
    return by_code.get(code, CausewayError)(code, message, reason, metadata)
