"""`Client`: the typed wrapper over `causeway.v1.EventStoreService`, and `Subscription`, a
subscription as an iterator of events that resumes after a dropped stream.

Every call converts its arguments at the edge (events.py, gates.py), calls the generated stub
with the client's deadline, and turns a failed call into the typed exception of errors.py, so a
caller sees `Denied`, `Conflict` or `InvalidArgument` and never a bare `grpc.RpcError`.

The subscription contract (server/src/subscribe.rs) is ordered, without duplicates or gaps, so a
stream can resume from the last position it accounted for plus one: the last event delivered,
or a later `Checkpoint` or `CaughtUp` (everything up to it was delivered or filtered out). A
resume after a drop therefore delivers each event exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from causeway_client.errors import CausewayError, Unavailable, from_rpc_error, from_status
from causeway_client.events import (
    Condition,
    EntityPage,
    Event,
    Expected,
    Filter,
    Head,
    LogPage,
    NewEvent,
)
from causeway_client.gates import Gate, Rule, definition_to_pb
from causeway_client.pb import causeway_pb2, causeway_pb2_grpc, event_pb2
from causeway_client.receipt import Receipt

#: The deadline of a unary call, in seconds, unless the client is given another.
TIMEOUT_S_DEFAULT = 30.0
#: The largest message the client accepts, as the Rust client: above the server's largest answer
#: (a subscription message ending in one append of the largest size, about 30 MiB). gRPC's
#: default of 4 MiB would refuse a single event larger than that.
RESPONSE_BYTES_MAX = 64 * 1024 * 1024
#: Events per page when a read is not given a limit; the server takes 1 to 10,000.
PAGE_EVENTS_DEFAULT = 100
#: How many times in a row a subscription reconnects after a dropped stream before it gives up.
RESUME_ATTEMPTS_MAX = 10
#: The wait before the first reconnection, doubled after each failure up to the next bound.
RESUME_BACKOFF_S_INITIAL = 0.1
#: The longest wait between reconnections.
RESUME_BACKOFF_S_MAX = 2.0


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._with_token(details), request_iterator)


@dataclass(frozen=True)
class Append:
    """One append of `Client.append_stream`: what `Client.append` takes as arguments."""

    events: Sequence[NewEvent]
    expected: Sequence[Expected] = ()
    condition: Condition | None = None
    idempotency_key: str = ""
    gates: Sequence[str] = ()
    external_causation: bool = False

    def to_pb(self) -> causeway_pb2.AppendRequest:
        return _append_request(
            self.events,
            self.expected,
            self.condition,
            self.idempotency_key,
            self.gates,
            self.external_causation,
        )


class Client:
    """A connection to one causewayd, over a plaintext channel unless given another.

    Usable as a context manager; `close()` closes a channel it opened (not one it was given).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float | None = TIMEOUT_S_DEFAULT,
        channel: grpc.Channel | None = None,
        token: str | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._owns_channel = channel is None
        self._raw_channel = (
            channel
            if channel is not None
            else grpc.insecure_channel(
                address, options=[("grpc.max_receive_message_length", RESPONSE_BYTES_MAX)]
            )
        )
        self.channel = self._raw_channel
        if token is not None:
            # Sent as `authorization: Bearer <token>` on every call, streams included.
            self.channel = grpc.intercept_channel(self._raw_channel, _Bearer(token))
        # The generated stub is untyped; the wrapper methods below are the typed surface.
        self.stub: Any = causeway_pb2_grpc.EventStoreServiceStub(self.channel)

    def close(self) -> None:
        """Closes the channel if this client opened it."""
        if self._owns_channel:
            self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Sequence[Expected] = (),
        condition: Condition | None = None,
        idempotency_key: str = "",
        gates: Sequence[str] = (),
        external_causation: bool = False,
    ) -> Receipt:
        """Appends `events` atomically (consecutive positions) and returns the receipt, once the
        events are on disk.

        Raises `Conflict` when an `expected` version does not hold, `Denied` when a gate (or the
        DCB `condition`) refuses, `IdempotencyConflict` when `idempotency_key` was used for other
        content; nothing is written then. A retry with the same key and content returns the
        first receipt, so a write whose outcome is unknown can be retried safely.
        """
        request = _append_request(
            events, expected, condition, idempotency_key, gates, external_causation
        )
        return Receipt.from_pb(self._call(self.stub.Append, request).receipt)

    def append_stream(self, appends: Iterable[Append]) -> Iterator[Receipt | CausewayError]:
        """Makes `appends` in order over one `AppendStream` call and yields, in the same order,
        each one's receipt or the typed exception that refused it. A refusal is yielded, not
        raised: the appends after it are still made, in order, so a condition of one on an
        earlier one holds. Appends are read from `appends` as the stream has room (the server
        keeps up to 64 pending), so a generator can feed a long stream.

        Raises a typed exception when the call itself ends with an error (a request the server
        cannot decode, a credential that no longer holds, a server shutting down, a follower's
        UNAVAILABLE with the leader's address): the appends not yet answered then have an
        unknown outcome, and are safe to retry only with idempotency keys.
        """
        requests = (causeway_pb2.AppendStreamRequest(append=append.to_pb()) for append in appends)
        try:
            for answer in self.stub.AppendStream(requests):
                if answer.HasField("receipt"):
                    yield Receipt.from_pb(answer.receipt)
                else:
                    yield from_status(answer.error)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def dry_run(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Sequence[Expected] = (),
        condition: Condition | None = None,
        gates: Sequence[str] = (),
        external_causation: bool = False,
    ) -> Receipt:
        """Evaluates an append's conditions and gates without writing; the receipt it would get
        now (unsigned), or the exception the append would raise."""
        request = _append_request(events, expected, condition, "", gates, external_causation)
        dry_run = causeway_pb2.DryRunRequest(append=request)
        return Receipt.from_pb(self._call(self.stub.DryRun, dry_run).receipt)

    def get(self, event_id: str) -> Event:
        """One event by id; `NotFound` when there is none, `InvalidArgument` for a bad id."""
        reply = self._call(self.stub.Get, causeway_pb2.GetRequest(id=event_id))
        return Event.from_pb(reply.event)

    def read_entity(
        self,
        scope: str,
        entity: str,
        *,
        from_version: int = 1,
        backward: bool = False,
        limit: int = PAGE_EVENTS_DEFAULT,
    ) -> EntityPage:
        """One page of an entity's events from `from_version` (inclusive; backward from 0 starts
        at the last event). Continue from `next_version` until `end`."""
        request = causeway_pb2.ReadEntityRequest(
            scope=scope,
            entity=entity,
            from_version=from_version,
            direction=_direction(backward),
            limit=limit,
        )
        reply = self._call(self.stub.ReadEntity, request)
        return EntityPage(
            events=[Event.from_pb(event) for event in reply.events],
            next_version=reply.next_version,
            end=reply.end,
            applied_position=reply.applied_position,
        )

    def read_log(
        self,
        from_position: int = 1,
        *,
        filter: Filter | None = None,
        backward: bool = False,
        limit: int = PAGE_EVENTS_DEFAULT,
    ) -> LogPage:
        """One page of the log from `from_position` (inclusive; backward from 0 starts at the
        head), filtered. Continue from `next_position` until `end`, or use `iter_log`. A forward
        page never ends inside an append, so it may hold more than `limit` events."""
        request = causeway_pb2.ReadLogRequest(
            from_position=from_position,
            direction=_direction(backward),
            limit=limit,
            filter=(filter or Filter()).to_pb(),
        )
        reply = self._call(self.stub.ReadLog, request)
        return LogPage(
            events=[Event.from_pb(event) for event in reply.events],
            next_position=reply.next_position,
            end=reply.end,
            applied_position=reply.applied_position,
        )

    def iter_log(
        self,
        from_position: int = 1,
        *,
        filter: Filter | None = None,
        backward: bool = False,
        page_events: int = PAGE_EVENTS_DEFAULT,
    ) -> Iterator[Event]:
        """Every matching event from `from_position` to the head (as of each page's read), page
        by page."""
        position = from_position
        while True:
            page = self.read_log(position, filter=filter, backward=backward, limit=page_events)
            yield from page.events
            if page.end:
                return
            position = page.next_position

    def head(self) -> Head:
        """The committed head position (0 when empty) and the log digest there."""
        reply = self._call(self.stub.Head, causeway_pb2.HeadRequest())
        return Head(position=reply.position, digest=bytes(reply.digest))

    def subscribe(
        self,
        from_position: int | None = 1,
        *,
        filter: Filter | None = None,
        resume_attempts: int = RESUME_ATTEMPTS_MAX,
    ) -> Subscription:
        """Follows the log from `from_position` (inclusive), or from now when None: catch-up from
        disk, then live. Iterate it for events; a dropped stream is resumed from the last
        position seen (see `Subscription`)."""
        return Subscription(self, from_position, filter or Filter(), resume_attempts)

    def register_gate(
        self,
        name: str,
        rule: Rule,
        *,
        scopes: Sequence[str] = (),
        types: Sequence[str] = (),
    ) -> Receipt:
        """Registers (or replaces) the gate `name` over `scopes` and `types` (all when empty).
        The receipt's position is the gate's version."""
        request = causeway_pb2.RegisterGateRequest(
            definition=definition_to_pb(name, rule, scopes, types)
        )
        return Receipt.from_pb(self._call(self.stub.RegisterGate, request).receipt)

    def list_gates(self) -> list[Gate]:
        """The gates in force, by name."""
        reply = self._call(self.stub.ListGates, causeway_pb2.ListGatesRequest())
        return [Gate.from_pb(gate) for gate in reply.gates]

    def remove_gate(self, name: str) -> Receipt:
        """Removes the gate `name`; `NotFound` when there is none."""
        request = causeway_pb2.RemoveGateRequest(name=name)
        return Receipt.from_pb(self._call(self.stub.RemoveGate, request).receipt)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None


class Subscription:
    """An iterator of the events a subscription delivers, in position order, each once.

    When the stream drops (UNAVAILABLE: a lost connection, a restarting or draining server), it
    reconnects from `position + 1` after a backoff, at most `resume_attempts` times in a row
    (the count restarts once a reconnected stream delivers a message); any other failure, or one
    drop too many, raises the typed exception. `close()` (or leaving a `with` block) cancels it.

    Attributes:
        position: the last position accounted for (delivered, or skipped by the filter as a
            checkpoint or catch-up said); 0 before any.
        caught_up: True once the catch-up phase ended; live events follow.
        resumes: how many times the stream was resumed after a drop.
    """

    def __init__(
        self, client: Client, from_position: int | None, filter: Filter, resume_attempts: int
    ) -> None:
        if from_position is not None and from_position < 1:
            raise ValueError(f"from_position {from_position} is below 1; positions start at 1")
        self._client = client
        self._filter = filter.to_pb()
        self._from_now = from_position is None
        self.position = 0 if from_position is None else from_position - 1
        self.caught_up = False
        self.resumes = 0
        self._resume_attempts = resume_attempts
        self._stream: Any = None
        self._closed = False
        self._events = self._run()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancels the stream; iteration then stops."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()

    def _request(self) -> causeway_pb2.SubscribeRequest:
        if self._from_now and self.position == 0:
            # Nothing seen yet: a resume can only start from now again (events committed while
            # disconnected before the first message are not delivered).
            return causeway_pb2.SubscribeRequest(from_now=True, filter=self._filter)
        return causeway_pb2.SubscribeRequest(from_position=self.position + 1, filter=self._filter)

    def _run(self) -> Iterator[Event]:
        failures = 0
        backoff_s = RESUME_BACKOFF_S_INITIAL
        while not self._closed:
            self._stream = self._client.stub.Subscribe(self._request())
            try:
                for message in self._stream:
                    failures, backoff_s = 0, RESUME_BACKOFF_S_INITIAL
                    kind = message.WhichOneof("message")
                    if kind == "events":
                        for event in message.events.events:
                            if event.position <= self.position:
                                continue
                            self.position = event.position
                            yield Event.from_pb(event)
                    elif kind == "caught_up":
                        self.caught_up = True
                        self.position = max(self.position, message.caught_up.position)
                    elif kind == "checkpoint":
                        self.position = max(self.position, message.checkpoint.position)
                return
            except grpc.RpcError as err:
                if self._closed:
                    return
                error: CausewayError = from_rpc_error(err)
                if not isinstance(error, Unavailable) or failures >= self._resume_attempts:
                    raise error from None
            failures += 1
            self.resumes += 1
            time.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RESUME_BACKOFF_S_MAX)


def _append_request(
    events: Sequence[NewEvent],
    expected: Sequence[Expected],
    condition: Condition | None,
    idempotency_key: str,
    gates: Sequence[str],
    external_causation: bool,
) -> causeway_pb2.AppendRequest:
    request = causeway_pb2.AppendRequest(
        events=[event.to_pb() for event in events],
        expected=[item.to_pb() for item in expected],
        idempotency_key=idempotency_key,
        gates=list(gates),
        external_causation=external_causation,
    )
    if condition is not None:
        request.condition.CopyFrom(condition.to_pb())
    return request


def _direction(backward: bool) -> event_pb2.Direction:
    return event_pb2.DIRECTION_BACKWARD if backward else event_pb2.DIRECTION_FORWARD
