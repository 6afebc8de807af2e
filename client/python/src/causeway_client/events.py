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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Union

from google.protobuf import timestamp_pb2

from causeway_client.pb import causeway_pb2, event_pb2

#: Expected version meaning "no condition".
ANY: Literal["any"] = "any"
#: Expected version meaning "the entity has no events".
NO_STREAM: Literal["no-stream"] = "no-stream"
#: Expected version meaning "the entity has at least one event".
EXISTS: Literal["exists"] = "exists"

ExpectedVersionValue = Union[int, Literal["any", "no-stream", "exists"]]


#: Nanoseconds in one millisecond, the hybrid clock's resolution.
NANOS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Timestamp:
    """A hybrid logical clock timestamp: wall milliseconds plus a counter within the millisecond.

    On the wire the wall time is a `google.protobuf.Timestamp` (`HybridTimestamp.wall`) in whole
    milliseconds; here it is `wall_ms`, milliseconds since the Unix epoch, exactly, and `wall` is
    the same time as an aware `datetime` in UTC. `str()` gives RFC 3339 with milliseconds.
    """

    wall_ms: int = 0
    logical: int = 0

    @property
    def wall(self) -> datetime:
        """The wall time as an aware datetime in UTC (exact: datetime keeps microseconds)."""
        return _EPOCH + timedelta(milliseconds=self.wall_ms)

    def __str__(self) -> str:
        return rfc3339(self.wall_ms)

    @staticmethod
    def from_pb(message: event_pb2.HybridTimestamp) -> Timestamp:
        """The wire's timestamp. Raises ValueError when the wall time is not whole milliseconds
        from the epoch on, which no server sends (it refuses such a time in a request)."""
        return Timestamp(
            wall_ms=wall_ms_from(message.wall.seconds, message.wall.nanos),
            logical=message.logical,
        )

    def to_pb(self) -> event_pb2.HybridTimestamp:
        return event_pb2.HybridTimestamp(
            wall=timestamp_pb2.Timestamp(
                seconds=self.wall_ms // 1000, nanos=self.wall_ms % 1000 * NANOS_PER_MS
            ),
            logical=self.logical,
        )


def wall_ms_from(seconds: int, nanos: int) -> int:
    """Milliseconds since the epoch from a Timestamp's parts; ValueError unless they are whole
    milliseconds, not before the epoch. Nothing is rounded."""
    if seconds < 0:
        raise ValueError(f"wall time seconds {seconds} is before the epoch")
    if not 0 <= nanos < 1_000_000_000 or nanos % NANOS_PER_MS != 0:
        raise ValueError(f"wall time nanos {nanos} is not whole milliseconds below one second")
    return seconds * 1000 + nanos // NANOS_PER_MS


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})"
)


def rfc3339(wall_ms: int) -> str:
    """Milliseconds since the epoch as RFC 3339 in UTC with milliseconds
    (`2023-11-14T22:13:20.123Z`), as the CLI and the console write it. ValueError past year
    9999, which RFC 3339 cannot write."""
    time = _EPOCH + timedelta(milliseconds=wall_ms)
    return time.strftime("%Y-%m-%dT%H:%M:%S") + f".{wall_ms % 1000:03d}Z"


def wall_ms_from_rfc3339(text: str) -> int:
    """Milliseconds since the epoch from an RFC 3339 time, exactly; ValueError when it is not
    RFC 3339, not whole milliseconds, or before the epoch."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    if offset in ("Z", "z"):
        zone = timezone.utc
    else:
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    time = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    seconds = (time - _EPOCH) // timedelta(seconds=1)
    return wall_ms_from(seconds, int(fraction.ljust(9, "0")))


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
