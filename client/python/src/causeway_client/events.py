"""The values a caller writes and reads: events, filters, conditions, pages, and the head.

Plain frozen dataclasses, converted to and from the generated messages (`causeway_client.pb`)
at the edge, in this file, so the rest of the package and its callers never build protobuf by
hand. Field names and meanings are the proto's (proto/causeway/v1/event.proto): the proto is
the documentation, these types only give it Python shapes.

- Positions are global, gapless from 1; versions are per scope and entity, dense from 1.
- A payload is bytes on the wire; `NewEvent` also takes a str (encoded as UTF-8) and
  `NewEvent.json` a JSON-serialisable value with content type `application/json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from causeway_client.pb import causeway_pb2, event_pb2

#: Expected version meaning "no condition".
ANY: Literal["any"] = "any"
#: Expected version meaning "the entity has no events".
NO_STREAM: Literal["no-stream"] = "no-stream"
#: Expected version meaning "the entity has at least one event".
EXISTS: Literal["exists"] = "exists"

ExpectedVersionValue = Union[int, Literal["any", "no-stream", "exists"]]


@dataclass(frozen=True)
class Timestamp:
    """A hybrid logical clock timestamp: wall milliseconds plus a counter within the millisecond."""

    wall_ms: int = 0
    logical: int = 0

    @staticmethod
    def from_pb(message: event_pb2.HybridTimestamp) -> Timestamp:
        return Timestamp(wall_ms=message.wall_ms, logical=message.logical)

    def to_pb(self) -> event_pb2.HybridTimestamp:
        return event_pb2.HybridTimestamp(wall_ms=self.wall_ms, logical=self.logical)


@dataclass(frozen=True)
class NewEvent:
    """An event to append; the store assigns position, version, timestamp and hash."""

    scope: str
    entity: str
    type: str
    payload: bytes | str = b""
    tags: Sequence[str] = ()
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    causation: Sequence[str] = ()
    correlation_id: str = ""
    id: str = ""

    @staticmethod
    def json(scope: str, entity: str, type: str, data: Any, **fields: Any) -> NewEvent:
        """An event whose payload is `data` as compact JSON, content type application/json."""
        payload = json.dumps(data, separators=(",", ":")).encode()
        return NewEvent(scope, entity, type, payload, content_type="application/json", **fields)

    def to_pb(self) -> event_pb2.NewEvent:
        payload = self.payload.encode() if isinstance(self.payload, str) else bytes(self.payload)
        return event_pb2.NewEvent(
            id=self.id,
            scope=self.scope,
            entity=self.entity,
            type=self.type,
            tags=list(self.tags),
            payload=payload,
            content_type=self.content_type,
            metadata=dict(self.metadata),
            causation=list(self.causation),
            correlation_id=self.correlation_id,
        )


@dataclass(frozen=True)
class Event:
    """A committed event, as the server returns it."""

    position: int
    version: int
    timestamp: Timestamp
    id: str
    scope: str
    entity: str
    type: str
    tags: tuple[str, ...]
    payload: bytes
    content_type: str
    metadata: Mapping[str, str]
    causation: tuple[str, ...]
    correlation_id: str
    hash: bytes

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)

    @staticmethod
    def from_pb(message: event_pb2.Event) -> Event:
        return Event(
            position=message.position,
            version=message.version,
            timestamp=Timestamp.from_pb(message.timestamp),
            id=message.id,
            scope=message.scope,
            entity=message.entity,
            type=message.type,
            tags=tuple(message.tags),
            payload=bytes(message.payload),
            content_type=message.content_type,
            metadata=dict(message.metadata),
            causation=tuple(message.causation),
            correlation_id=message.correlation_id,
            hash=bytes(message.hash),
        )


@dataclass(frozen=True)
class QueryItem:
    """One item of a DCB query: any of `types` (any type when empty) carrying every one of `tags`."""

    types: Sequence[str] = ()
    tags: Sequence[str] = ()


@dataclass(frozen=True)
class Filter:
    """Which events a read or a subscription returns; the empty filter matches every event."""

    scopes: Sequence[str] = ()
    entity_prefix: str = ""
    items: Sequence[QueryItem] = ()
    since: Timestamp | None = None
    until: Timestamp | None = None

    def to_pb(self) -> event_pb2.Filter:
        message = event_pb2.Filter(
            scopes=list(self.scopes),
            entity_prefix=self.entity_prefix,
            items=[
                event_pb2.QueryItem(types=list(item.types), tags=list(item.tags))
                for item in self.items
            ],
        )
        if self.since is not None:
            message.since.CopyFrom(self.since.to_pb())
        if self.until is not None:
            message.until.CopyFrom(self.until.to_pb())
        return message


@dataclass(frozen=True)
class Expected:
    """A version condition on one entity: an exact version, or ANY, NO_STREAM or EXISTS."""

    scope: str
    entity: str
    version: ExpectedVersionValue

    def to_pb(self) -> causeway_pb2.ExpectedVersion:
        kinds = {
            ANY: causeway_pb2.EXPECTED_KIND_ANY,
            NO_STREAM: causeway_pb2.EXPECTED_KIND_NO_STREAM,
            EXISTS: causeway_pb2.EXPECTED_KIND_EXISTS,
        }
        if isinstance(self.version, bool) or not isinstance(self.version, (int, str)):
            raise TypeError(f"expected version {self.version!r} is not an int or a kind")
        if isinstance(self.version, int):
            if self.version < 0:
                raise ValueError(f"expected version {self.version} is negative")
            return causeway_pb2.ExpectedVersion(
                scope=self.scope,
                entity=self.entity,
                kind=causeway_pb2.EXPECTED_KIND_EXACT,
                version=self.version,
            )
        if self.version not in kinds:
            raise ValueError(f"expected version {self.version!r} is not one of {sorted(kinds)}")
        return causeway_pb2.ExpectedVersion(
            scope=self.scope, entity=self.entity, kind=kinds[self.version]
        )


@dataclass(frozen=True)
class Condition:
    """A DCB condition: refuse the append if an event matching `query` exists after
    `after_position` (the position the caller's decision was based on)."""

    query: Filter
    after_position: int

    def to_pb(self) -> causeway_pb2.DcbCondition:
        return causeway_pb2.DcbCondition(
            query=self.query.to_pb(), after_position=self.after_position
        )


@dataclass(frozen=True)
class EntityPage:
    """One page of an entity's events; continue from `next_version` until `end`."""

    events: list[Event]
    next_version: int
    end: bool
    applied_position: int


@dataclass(frozen=True)
class LogPage:
    """One page of the log; continue from `next_position` until `end`."""

    events: list[Event]
    next_position: int
    end: bool
    applied_position: int


@dataclass(frozen=True)
class Head:
    """The committed head: the last position (0 when empty) and the log digest there."""

    position: int
    digest: bytes
