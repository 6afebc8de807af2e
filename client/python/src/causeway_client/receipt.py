"""Receipts, and their offline verification: no server, only the receipt, the events it names
and the server's Ed25519 public key.

This is a third implementation (after core/src/receipt.rs and client/src/receipt.rs) of two byte
layouts the core defines, and must agree with them byte for byte:

- an event's chain hash (docs/FORMAT.md, "Hash"):
  `blake3(prev_hash || [1, 1] || fields || payload)`, where `fields` are position, version and
  the packed timestamp (`wall_ms << 16 | logical`, the wall time in whole milliseconds) as little-endian u64, id and correlation id
  as 16 UUID bytes, scope, entity, type and content type as u16 length + UTF-8, the tags (u16
  count, each u16 length + UTF-8, in order), the metadata sorted by key (u16 count, key and
  value each u16 length + UTF-8), and the causation ids (u16 count, 16 bytes each);
- a receipt's canonical bytes, which the signature covers: `causeway.receipt.v1\\0`, the event
  count (u32), per event its id (16), position, version and packed timestamp (u64 each), hash and
  prev_hash (32 each); the gate count (u32), per gate its name (u32 length + UTF-8) and version
  (u64); then the digest (32). Everything but the signature and its key id.

`verify_receipt` checks what it is given: each event against the receipt (assigned fields equal,
bytes hashing to the committed hash from the receipt's prev_hash) and, with a public key, the
signature. Without the key a forged receipt over genuine events passes, so pass it whenever you
have it. The tests pin both layouts to the golden values of client/src/receipt.rs.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from causeway_client.events import Event, Timestamp, rfc3339, wall_ms_from_rfc3339
from causeway_client.pb import receipt_pb2

#: Opens a receipt's canonical bytes, so a signature over a receipt is never taken for another.
RECEIPT_DOMAIN_TAG = b"causeway.receipt.v1\0"
#: The record format version whose hash this module computes.
RECORD_VERSION = 1
#: The record kind of an event.
KIND_EVENT = 1
#: Bytes in an event hash, a prev_hash and a log digest (blake3).
HASH_BYTES = 32
#: Bytes in an Ed25519 signature.
SIGNATURE_BYTES = 64
#: Bytes in an Ed25519 public key.
PUBLIC_KEY_BYTES = 32
#: The largest wall time a timestamp can carry: it packs as `wall_ms << 16 | logical`.
WALL_MS_MAX = (1 << 48) - 1
#: The largest logical counter a timestamp can carry.
LOGICAL_MAX = (1 << 16) - 1
#: The largest length or count behind a u16 prefix.
U16_MAX = (1 << 16) - 1
#: The largest count or length behind a u32 prefix.
U32_MAX = (1 << 32) - 1
#: The largest u64.
U64_MAX = (1 << 64) - 1


class ReceiptError(Exception):
    """A receipt does not verify; the message says why.

    Attributes:
        kind: `count` (receipt and events do not line up), `event` (an event differs from the
            receipt), `malformed` (a value no genuine receipt holds), `unsigned` (a key was
            given, no signature), or `signature` (it does not verify under the key).
        index: the event, from 0, for `event`; else None.
    """

    def __init__(self, kind: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.index = index


@dataclass(frozen=True)
class Committed:
    """The fields assigned to one event on commit, and its chain link."""

    id: str
    position: int
    version: int
    timestamp: Timestamp
    hash: bytes
    prev_hash: bytes


@dataclass(frozen=True)
class GatePass:
    """A gate the append passed, and the version of its definition (0 when built in)."""

    name: str
    version: int


@dataclass(frozen=True)
class Receipt:
    """What an accepted append proves (proto/causeway/v1/receipt.proto)."""

    events: tuple[Committed, ...]
    gates: tuple[GatePass, ...]
    digest: bytes
    signature_key_id: str
    signature: bytes

    @property
    def first_position(self) -> int:
        """The position of the append's first event."""
        return self.events[0].position

    @property
    def last_position(self) -> int:
        """The position of the append's last event."""
        return self.events[-1].position

    @staticmethod
    def from_pb(message: receipt_pb2.Receipt) -> Receipt:
        return Receipt(
            events=tuple(
                Committed(
                    id=committed.id,
                    position=committed.position,
                    version=committed.version,
                    timestamp=Timestamp.from_pb(committed.timestamp),
                    hash=bytes(committed.hash),
                    prev_hash=bytes(committed.prev_hash),
                )
                for committed in message.events
            ),
            gates=tuple(GatePass(gate.name, gate.version) for gate in message.gates),
            digest=bytes(message.digest),
            signature_key_id=message.signature_key_id,
            signature=bytes(message.signature),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form `causeway --output json append` prints (hex hashes and signature)."""
        return {
            "events": [
                {
                    "id": committed.id,
                    "position": committed.position,
                    "version": committed.version,
                    "timestamp": _timestamp_json(committed.timestamp),
                    "hash": committed.hash.hex(),
                    "prev_hash": committed.prev_hash.hex(),
                }
                for committed in self.events
            ],
            "gates": [{"name": gate.name, "version": gate.version} for gate in self.gates],
            "digest": self.digest.hex(),
            "signature_key_id": self.signature_key_id,
            "signature": self.signature.hex(),
        }

    @staticmethod
    def from_json(value: Mapping[str, Any]) -> Receipt:
        """Reads the JSON form `to_json` and the CLI write; a wrong shape is `malformed`."""
        obj = _object(value, "receipt")
        events = tuple(
            Committed(
                id=_string(item, "id", f"receipt.events[{idx}]"),
                position=_uint(item, "position", f"receipt.events[{idx}]"),
                version=_uint(item, "version", f"receipt.events[{idx}]"),
                timestamp=_timestamp_from(item, f"receipt.events[{idx}]"),
                hash=_hex(item, "hash", f"receipt.events[{idx}]"),
                prev_hash=_hex(item, "prev_hash", f"receipt.events[{idx}]"),
            )
            for idx, item in enumerate(_array(obj, "events", "receipt"))
        )
        gates = tuple(
            GatePass(
                name=_string(item, "name", f"receipt.gates[{idx}]"),
                version=_uint(item, "version", f"receipt.gates[{idx}]"),
            )
            for idx, item in enumerate(_array(obj, "gates", "receipt", optional=True))
        )
        signature_key_id = obj.get("signature_key_id") or ""
        if not isinstance(signature_key_id, str):
            raise _malformed("receipt.signature_key_id must be a string")
        return Receipt(
            events=events,
            gates=gates,
            digest=_hex(obj, "digest", "receipt"),
            signature_key_id=signature_key_id,
            signature=_hex(obj, "signature", "receipt") if obj.get("signature") else b"",
        )


#: What a receipt's JSON and an events file are, for the message that refuses other text.
RECEIPT_HINT = "the output of `causeway --output json append`"
EVENTS_HINT = "the output of `causeway --output json get`, `read` or `tail`"
#: Blanks and a byte order mark, allowed before JSON text.
TEXT_LEAD = " \t\r\n\ufeff"
#: How much of a path or text a refusal quotes.
QUOTED_CHARS_MAX = 120

ReceiptInput = Union[
    Receipt, receipt_pb2.Receipt, Mapping[str, Any], str, bytes, bytearray, "os.PathLike[str]"
]
EventsInput = Union[Iterable[Any], Mapping[str, Any], str, bytes, bytearray, "os.PathLike[str]"]


def load_receipt(receipt: ReceiptInput) -> Receipt:
    """A receipt from any form: a `Receipt`, the wire message, the CLI's JSON as a dict, as JSON
    text (bytes, or a str whose first non-blank character is `{`), or a path to a file holding
    it (any other str, or an `os.PathLike`)."""
    if isinstance(receipt, Receipt):
        return receipt
    if isinstance(receipt, receipt_pb2.Receipt):
        return Receipt.from_pb(receipt)
    if isinstance(receipt, Mapping):
        return Receipt.from_json(receipt)
    if not isinstance(receipt, (str, bytes, bytearray, os.PathLike)):
        raise TypeError(
            "receipt must be a Receipt, the wire message, a dict, JSON text (str or bytes) or a "
            f"path, not {type(receipt).__name__}"
        )
    return Receipt.from_json(_parse_json(receipt, "receipt", RECEIPT_HINT))


def load_events(events: EventsInput) -> list[Event]:
    """Events from any form: `Event`s, wire messages, the CLI's JSON of `get`, `read` or `tail`
    (an array, an object with `events`, one event, or one event per line; the payload comes from
    `payload_base64`), as dicts, JSON text (bytes, or a str whose first non-blank character is
    `{` or `[`) or a path to a file holding it (any other str, or an `os.PathLike`)."""
    parsed = isinstance(events, (str, bytes, bytearray, os.PathLike))
    value: Any = _events_json(_read_text(events, "events")) if parsed else events
    items: Iterable[Any]
    if isinstance(value, Mapping):
        # One event (what `get` prints), or a page of them under `events` (what `read` prints).
        items = value["events"] if isinstance(value.get("events"), list) else [value]
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes, bytearray)):
        items = value
    elif parsed:
        raise _malformed(
            f"events: a JSON {type(value).__name__}, not an event or a list of events; "
            f"expected {EVENTS_HINT}"
        )
    else:
        raise TypeError(
            "events must be Events, dicts, wire messages, JSON text (str or bytes) or a path, "
            f"not {type(value).__name__}"
        )
    loaded: list[Event] = []
    for idx, item in enumerate(items):
        if isinstance(item, Event):
            loaded.append(item)
        elif isinstance(item, Mapping):
            loaded.append(_event_from_json(item, f"events[{idx}]"))
        elif hasattr(item, "DESCRIPTOR") and item.DESCRIPTOR.full_name == "causeway.v1.Event":
            loaded.append(Event.from_pb(item))
        else:
            raise _malformed(f"events[{idx}] is not an event: {type(item).__name__}")
    return loaded


def verify_receipt(
    receipt: ReceiptInput,
    public_key: bytes | str | None = None,
    *,
    events: EventsInput | None = None,
) -> Receipt:
    """Verifies a receipt offline and returns it; raises `ReceiptError` saying why not.

    With `public_key` (32 bytes or 64 hex digits: the server logs it as `signing_public_key`),
    the Ed25519 signature over `canonical_bytes` must verify: any change to an id, position,
    version, timestamp, hash, prev_hash, gate or the digest is caught. With `events` (as
    `load_events` reads them), each event must match the receipt and its bytes must hash to the
    committed hash. At least one of the two must be given: a check of nothing is refused.
    """
    loaded = load_receipt(receipt)
    if public_key is None and events is None:
        raise ValueError("nothing to check: give the public key, the events, or both")
    if events is not None:
        verify_events(loaded, load_events(events))
    if public_key is not None:
        verify_signature(loaded, public_key)
    return loaded


def verify_events(receipt: Receipt, events: Sequence[Event]) -> None:
    """Each event matches the receipt's entry at its index and hashes to its committed hash."""
    if len(receipt.events) != len(events):
        raise ReceiptError(
            "count", f"receipt names {len(receipt.events)} events but {len(events)} were given"
        )
    for index, (committed, event) in enumerate(zip(receipt.events, events)):
        what = f"receipt event {index}"
        fields = [
            ("id", _uuid_bytes(committed.id, f"{what} id") == _uuid_bytes(event.id, f"{what} id")),
            ("position", committed.position == event.position),
            ("version", committed.version == event.version),
            (
                "timestamp",
                packed_timestamp(committed.timestamp, f"{what} timestamp")
                == packed_timestamp(event.timestamp, f"{what} timestamp"),
            ),
            ("hash", committed.hash == event.hash),
        ]
        for name, same in fields:
            if not same:
                raise ReceiptError(
                    "event", f"event {index} does not match the receipt: {name} differs", index
                )
        prev_hash = _hash_bytes(committed.prev_hash, f"{what} prev_hash")
        if event_hash(event, prev_hash) != committed.hash:
            raise ReceiptError(
                "event",
                f"event {index} does not match the receipt: "
                "the event's bytes do not hash to the committed hash",
                index,
            )


def verify_signature(receipt: Receipt, public_key: bytes | str) -> None:
    """The receipt's Ed25519 signature verifies under `public_key` over its canonical bytes."""
    key_bytes = _public_key_bytes(public_key)
    if not receipt.signature:
        raise ReceiptError("unsigned", "receipt is not signed")
    if len(receipt.signature) != SIGNATURE_BYTES:
        raise ReceiptError(
            "signature",
            f"signature does not verify: the signature is {len(receipt.signature)} bytes, "
            f"not {SIGNATURE_BYTES}",
        )
    try:
        key = Ed25519PublicKey.from_public_bytes(key_bytes)
        key.verify(receipt.signature, canonical_bytes(receipt))
    except InvalidSignature:
        raise ReceiptError("signature", "signature does not verify") from None
    except ValueError as err:
        raise ReceiptError("signature", f"signature does not verify: {err}") from None
    # The key's name is not covered by the signature: it must name the key that verified it,
    # as the server checks.
    expected = key_id(key_bytes)
    if receipt.signature_key_id != expected:
        raise ReceiptError(
            "signature",
            f"signature does not verify: the receipt names key "
            f"{receipt.signature_key_id[:64]!r}, the given public key is {expected}",
        )


def key_id(public_key: bytes) -> str:
    """The id causewayd gives its signing key: `ed25519:` and the key's first 8 bytes in hex."""
    return "ed25519:" + public_key[:8].hex()


def canonical_bytes(receipt: Receipt) -> bytes:
    """The bytes a receipt's signature covers (layout in the module overview)."""
    out = bytearray(RECEIPT_DOMAIN_TAG)
    out += _u32(len(receipt.events), "receipt event count")
    for index, committed in enumerate(receipt.events):
        what = f"receipt event {index}"
        out += _uuid_bytes(committed.id, f"{what} id")
        out += _u64(committed.position, f"{what} position")
        out += _u64(committed.version, f"{what} version")
        out += _u64(packed_timestamp(committed.timestamp, f"{what} timestamp"), f"{what} timestamp")
        out += _hash_bytes(committed.hash, f"{what} hash")
        out += _hash_bytes(committed.prev_hash, f"{what} prev_hash")
    out += _u32(len(receipt.gates), "receipt gate count")
    for gate in receipt.gates:
        name = gate.name.encode()
        out += _u32(len(name), "gate name length")
        out += name
        out += _u64(gate.version, "gate version")
    out += _hash_bytes(receipt.digest, "receipt digest")
    return bytes(out)


def event_hash(event: Event, prev_hash: bytes) -> bytes:
    """An event's chain hash from its fields, its payload and the previous hash of its entity
    (32 zero bytes for its first event). The event's own `hash` is ignored."""
    fields = bytearray()
    fields += _u64(event.position, "event position")
    fields += _u64(event.version, "event version")
    fields += _u64(packed_timestamp(event.timestamp, "event timestamp"), "event timestamp")
    fields += _uuid_bytes(event.id, "event id")
    fields += _uuid_bytes(event.correlation_id, "event correlation_id")
    for value, what in (
        (event.scope, "event scope"),
        (event.entity, "event entity"),
        (event.type, "event type"),
        (event.content_type, "event content_type"),
    ):
        fields += _str16(value, what)
    fields += _u16(len(event.tags), "event tag count")
    for tag in event.tags:
        fields += _str16(tag, "event tag")
    # The core keeps metadata sorted by key (a BTreeMap over UTF-8 bytes, the same order as
    # Python's code-point order); the wire map has no order.
    fields += _u16(len(event.metadata), "event metadata count")
    for key in sorted(event.metadata):
        fields += _str16(key, "event metadata key")
        fields += _str16(event.metadata[key], "event metadata value")
    fields += _u16(len(event.causation), "event causation count")
    for parent in event.causation:
        fields += _uuid_bytes(parent, "event causation id")
    hasher = blake3.blake3()
    hasher.update(_hash_bytes(prev_hash, "prev_hash"))
    hasher.update(bytes([RECORD_VERSION, KIND_EVENT]))
    hasher.update(bytes(fields))
    hasher.update(event.payload)
    return hasher.digest()


def packed_timestamp(timestamp: Timestamp, what: str) -> int:
    """A timestamp packed as the core stores it, `wall_ms << 16 | logical`."""
    if not (0 <= timestamp.wall_ms <= WALL_MS_MAX and 0 <= timestamp.logical <= LOGICAL_MAX):
        raise _malformed(
            f"{what}: {timestamp.wall_ms}+{timestamp.logical} does not fit 48 bits of "
            "milliseconds and 16 of counter"
        )
    return timestamp.wall_ms << 16 | timestamp.logical


def _malformed(detail: str) -> ReceiptError:
    return ReceiptError("malformed", f"malformed {detail}")


def _public_key_bytes(public_key: bytes | str) -> bytes:
    if isinstance(public_key, str):
        try:
            public_key = bytes.fromhex(public_key.strip())
        except ValueError:
            raise ValueError("the public key must be 64 hex digits (Ed25519)") from None
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"the public key is {len(public_key)} bytes, not {PUBLIC_KEY_BYTES}")
    return bytes(public_key)


def _uuid_bytes(text: str, what: str) -> bytes:
    try:
        return uuid.UUID(text).bytes
    except (ValueError, TypeError, AttributeError):
        raise _malformed(f"{what}: {text!r} is not a uuid") from None


def _hash_bytes(value: bytes, what: str) -> bytes:
    if len(value) != HASH_BYTES:
        raise _malformed(f"{what}: {len(value)} bytes, not {HASH_BYTES}")
    return bytes(value)


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= U16_MAX:
        raise _malformed(f"{what}: {value} does not fit the u16 length prefix")
    return struct.pack("<H", value)


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= U32_MAX:
        raise _malformed(f"{what}: {value} is too large")
    return struct.pack("<I", value)


def _u64(value: int, what: str) -> bytes:
    if not 0 <= value <= U64_MAX:
        raise _malformed(f"{what}: {value} does not fit 64 bits")
    return struct.pack("<Q", value)


def _str16(value: str, what: str) -> bytes:
    encoded = value.encode()
    return _u16(len(encoded), what) + encoded


def _timestamp_json(timestamp: Timestamp) -> dict[str, Any]:
    return {"wall": rfc3339(timestamp.wall_ms), "logical": timestamp.logical}


def _read_text(source: str | bytes | bytearray | os.PathLike[str], what: str) -> str:
    """The JSON text `source` holds or names. Bytes are the text; a str whose first non-blank
    character opens a JSON object or array (`{`, `[`) is the text, as every receipt and events
    file is; any other str, and any `os.PathLike`, is a path to a file holding it. A byte order
    mark is allowed before the text."""
    if isinstance(source, (bytes, bytearray)):
        return _decode(bytes(source), what, "the text")
    if isinstance(source, str):
        text = source.lstrip(TEXT_LEAD)
        if not text:
            raise _malformed(f"{what}: empty; give the JSON text, a dict or a path")
        if text[:1] in ("{", "["):
            return text
    path = Path(source)
    try:
        return _decode(path.read_bytes(), what, _quoted(str(path)))
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise _malformed(
            f"{what}: cannot read {_quoted(str(path))} ({why}); "
            "give the JSON text, a dict or a path"
        ) from None


def _events_json(text: str) -> Any:
    """Events text as JSON: one value, or one value per line (as `tail` prints them)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole:
        values = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise _malformed(
                    f"events: not JSON ({whole}), nor one JSON value per line (line {number}: "
                    f"{err}); expected {EVENTS_HINT}"
                ) from None
        return values


def _decode(data: bytes, what: str, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        why = f"{err.reason} at byte {err.start}"
        raise _malformed(f"{what}: {source} is not UTF-8 ({why})") from None


def _quoted(text: str) -> str:
    """`text` quoted for a message, its middle elided past `QUOTED_CHARS_MAX` characters."""
    if len(text) > QUOTED_CHARS_MAX:
        half = QUOTED_CHARS_MAX // 2
        text = f"{text[:half]}...{text[-half:]}"
    return repr(text)


def _parse_json(source: str | bytes | bytearray | os.PathLike[str], what: str, hint: str) -> Any:
    try:
        return json.loads(_read_text(source, what))
    except json.JSONDecodeError as err:
        raise _malformed(f"{what}: not JSON ({err}); expected {hint}") from None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(f"{what} must be a JSON object")
    return value


def _array(obj: Mapping[str, Any], key: str, what: str, optional: bool = False) -> list[Any]:
    value = obj.get(key)
    if value is None and optional:
        return []
    if not isinstance(value, list):
        raise _malformed(f"{what}.{key} must be an array")
    return [_object(item, f"{what}.{key}[{idx}]") for idx, item in enumerate(value)]


def _string(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _malformed(f"{what}.{key} must be a string")
    return value


def _uint(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise _malformed(f"{what}.{key} must be a non-negative integer")
    return value


def _hex(obj: Mapping[str, Any], key: str, what: str) -> bytes:
    try:
        return bytes.fromhex(_string(obj, key, what))
    except ValueError:
        raise _malformed(f"{what}.{key} is not hex") from None


def _timestamp_from(obj: Mapping[str, Any], what: str) -> Timestamp:
    timestamp = _object(obj.get("timestamp"), f"{what}.timestamp")
    wall = _string(timestamp, "wall", f"{what}.timestamp")
    try:
        wall_ms = wall_ms_from_rfc3339(wall)
    except ValueError as err:
        raise _malformed(f"{what}.timestamp.wall: {err}") from None
    return Timestamp(wall_ms=wall_ms, logical=_uint(timestamp, "logical", f"{what}.timestamp"))


def _strings(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _malformed(f"{what}.{key} must be an array of strings")
    return tuple(value)


def _event_from_json(obj: Mapping[str, Any], what: str) -> Event:
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(
        isinstance(value, str) for value in metadata.values()
    ):
        raise _malformed(f"{what}.metadata must be an object of strings")
    payload_text = obj.get("payload_base64")
    if not isinstance(payload_text, str):
        raise _malformed(f"{what}.payload_base64 is missing: the exact payload bytes are needed")
    try:
        # With all, part or none of its padding, as the CLI reads it.
        bare = payload_text.rstrip("=")
        padded = bare + "=" * (-len(bare) % 4) if len(payload_text) - len(bare) <= 2 else "!"
        payload = base64.b64decode(padded, validate=True)
    except ValueError:
        raise _malformed(f"{what}.payload_base64 is not valid base64") from None
    # The readable copy is what a person looks at: it must be the bytes that are checked.
    if "payload" in obj:
        try:
            text: str | None = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if obj["payload"] != text:
            raise _malformed(
                f"{what}.payload is not the payload that {what}.payload_base64 holds: "
                "the text shown would not be the bytes checked"
            )
    content_type = obj.get("content_type") or ""
    if not isinstance(content_type, str):
        raise _malformed(f"{what}.content_type must be a string")
    return Event(
        position=_uint(obj, "position", what),
        version=_uint(obj, "version", what),
        timestamp=_timestamp_from(obj, what),
        id=_string(obj, "id", what),
        scope=_string(obj, "scope", what),
        entity=_string(obj, "entity", what),
        type=_string(obj, "type", what),
        tags=_strings(obj, "tags", what),
        payload=payload,
        content_type=content_type,
        metadata=dict(metadata),
        causation=_strings(obj, "causation", what),
        correlation_id=_string(obj, "correlation_id", what),
        hash=_hex(obj, "hash", what),
    )
