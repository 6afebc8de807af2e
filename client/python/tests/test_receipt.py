"""Offline receipt verification: byte for byte the same as the Rust client (golden values of
client/src/receipt.rs, printed by causeway-core), a receipt the live server produced verifies,
and a tampered copy is refused, whichever field was changed."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import pytest

from causeway_client import (
    AllowedTypes,
    Client,
    Committed,
    Event,
    GatePass,
    NewEvent,
    Receipt,
    ReceiptError,
    Timestamp,
    load_events,
    verify_receipt,
)
from causeway_client.events import wall_ms_from, wall_ms_from_rfc3339
from causeway_client.receipt import canonical_bytes, event_hash

from conftest import unique

# The golden store of client/src/receipt.rs: signing secret [7; 32], gate `order-types`
# registered at position 1, then one append of two events of acme/order-507.
PUBLIC_KEY = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
DIGEST = "47501706f0661beb7da5fdd2cdcf65d73bed9995414dd79a8eb86718674f5667"
SIGNATURE = (
    "2f2b0246358a73e2ac2c4bd68a1c210f310aa95f412281369a9e9d9aae40fbaa"
    "5be1787b1e2b9aa240ef429a9b189a0c8e7cf595025d8fb2050b63b062b81107"
)
CANONICAL = (
    "63617573657761792e726563656970742e76310002000000"
    "01890a5dac96774bbcceb302099a8057"
    "0200000000000000"
    "0100000000000000"
    "05007b38d360ba01"
    "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "01890a5dac967c4e9a1f3d2b8e6f0a11"
    "0300000000000000"
    "0200000000000000"
    "06007b38d360ba01"
    "24a94e840d404cf090c0950b522694d1843aeff94ab5ffad41d7af5288048e7c"
    "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047"
    "01000000"
    "0b0000006f726465722d7479706573"
    "0100000000000000"
    "47501706f0661beb7da5fdd2cdcf65d73bed9995414dd79a8eb86718674f5667"
)
ID_1 = "01890a5d-ac96-774b-bcce-b302099a8057"
ID_2 = "01890a5d-ac96-7c4e-9a1f-3d2b8e6f0a11"
CORRELATION = "01890a5d-0000-7000-8000-000000000042"
HASH_1 = "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047"
HASH_2 = "24a94e840d404cf090c0950b522694d1843aeff94ab5ffad41d7af5288048e7c"
WALL_MS = 1_900_000_000_123


def golden_events() -> list[Event]:
    common = dict(scope="acme", entity="order-507", correlation_id=CORRELATION)
    return [
        Event(position=2, version=1, timestamp=Timestamp(WALL_MS, 5), id=ID_1,
              type="OrderPlaced", tags=("customer:42", "region:eu"), payload=b'{"total":12}',
              content_type="application/json",
              # Out of order on purpose: the encoding sorts by key.
              metadata={"zeta": "last", "alpha": "first", "mid": "dle"},
              causation=(), hash=bytes.fromhex(HASH_1), **common),
        Event(position=3, version=2, timestamp=Timestamp(WALL_MS, 6), id=ID_2,
              type="OrderPaid", tags=(), payload=bytes([0, 159, 146, 150, 255]),
              content_type="", metadata={}, causation=(ID_1,), hash=bytes.fromhex(HASH_2),
              **common),
    ]


def golden_receipt() -> Receipt:
    return Receipt(
        events=(
            Committed(ID_1, 2, 1, Timestamp(WALL_MS, 5), bytes.fromhex(HASH_1), bytes(32)),
            Committed(ID_2, 3, 2, Timestamp(WALL_MS, 6), bytes.fromhex(HASH_2),
                      bytes.fromhex(HASH_1)),
        ),
        gates=(GatePass("order-types", 1),),
        digest=bytes.fromhex(DIGEST),
        signature_key_id="ed25519:ea4a6c63e29c520a",
        signature=bytes.fromhex(SIGNATURE),
    )


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1:]


def with_event(receipt: Receipt, index: int, **changes: object) -> Receipt:
    events = list(receipt.events)
    events[index] = dataclasses.replace(events[index], **changes)
    return dataclasses.replace(receipt, events=tuple(events))


def test_canonical_bytes_match_the_core() -> None:
    assert canonical_bytes(golden_receipt()).hex() == CANONICAL


def test_event_hashes_match_the_core() -> None:
    first, second = golden_events()
    assert event_hash(first, bytes(32)).hex() == HASH_1
    assert event_hash(second, bytes.fromhex(HASH_1)).hex() == HASH_2


def test_the_golden_receipt_verifies_with_key_and_events() -> None:
    assert verify_receipt(golden_receipt(), PUBLIC_KEY, events=golden_events()) is not None
    verify_receipt(golden_receipt(), bytes.fromhex(PUBLIC_KEY))
    verify_receipt(golden_receipt(), events=golden_events())


def test_a_check_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        verify_receipt(golden_receipt())


# Each tamper names what it changes; all must be refused by the signature check.
RECEIPT_TAMPERS: list[tuple[str, Callable[[Receipt], Receipt]]] = [
    ("event hash", lambda r: with_event(r, 0, hash=flip(r.events[0].hash))),
    ("prev_hash", lambda r: with_event(r, 1, prev_hash=flip(r.events[1].prev_hash))),
    ("position", lambda r: with_event(r, 0, position=r.events[0].position + 1)),
    ("version", lambda r: with_event(r, 1, version=7)),
    ("timestamp", lambda r: with_event(r, 0, timestamp=Timestamp(WALL_MS, 9))),
    ("id", lambda r: with_event(r, 1, id=ID_1)),
    ("digest", lambda r: dataclasses.replace(r, digest=flip(r.digest))),
    ("gate", lambda r: dataclasses.replace(r, gates=(GatePass("order-typez", 1),))),
    ("dropped gate", lambda r: dataclasses.replace(r, gates=())),
    ("signature", lambda r: dataclasses.replace(r, signature=flip(r.signature, 10))),
]


@pytest.mark.parametrize("what,tamper", RECEIPT_TAMPERS, ids=[t[0] for t in RECEIPT_TAMPERS])
def test_a_changed_golden_receipt_breaks_the_signature(
    what: str, tamper: Callable[[Receipt], Receipt]
) -> None:
    with pytest.raises(ReceiptError) as refused:
        verify_receipt(tamper(golden_receipt()), PUBLIC_KEY)
    assert refused.value.kind == "signature", f"changing the {what}: {refused.value}"


def test_a_changed_event_does_not_hash_to_the_receipt() -> None:
    tampers: list[tuple[str, dict[str, object]]] = [
        ("payload", {"payload": b'{"total":13}'}),
        ("metadata", {"metadata": {"zeta": "last", "alpha": "first", "mid": "DLE"}}),
        ("tag order", {"tags": ("region:eu", "customer:42")}),
        ("correlation", {"correlation_id": ID_2}),
        ("causation", {"causation": (ID_2,)}),
    ]
    for what, changes in tampers:
        events = golden_events()
        events[0] = dataclasses.replace(events[0], **changes)
        with pytest.raises(ReceiptError) as refused:
            verify_receipt(golden_receipt(), PUBLIC_KEY, events=events)
        assert (refused.value.kind, refused.value.index) == ("event", 0), what
        assert "do not hash" in str(refused.value), what


def test_a_wrong_key_or_a_missing_signature_is_refused() -> None:
    with pytest.raises(ReceiptError) as wrong:
        verify_receipt(golden_receipt(), flip(bytes.fromhex(PUBLIC_KEY)))
    assert wrong.value.kind == "signature"
    with pytest.raises(ReceiptError) as unsigned:
        verify_receipt(dataclasses.replace(golden_receipt(), signature=b""), PUBLIC_KEY)
    assert unsigned.value.kind == "unsigned"


def test_timestamps_are_rfc_3339_in_json_and_whole_milliseconds() -> None:
    value = golden_receipt().to_json()
    assert value["events"][0]["timestamp"] == {"wall": str(Timestamp(WALL_MS)), "logical": 5}
    assert str(Timestamp(1_700_000_000_123)) == "2023-11-14T22:13:20.123Z"
    assert wall_ms_from_rfc3339("2023-11-14T23:13:20.123+01:00") == 1_700_000_000_123
    assert Timestamp.from_pb(Timestamp(1_700_000_000_123, 2).to_pb()) == Timestamp(
        1_700_000_000_123, 2
    )
    for finer in ("2023-11-14T22:13:20.1234Z", "1969-12-31T23:59:59.999Z", "yesterday"):
        value["events"][0]["timestamp"]["wall"] = finer
        with pytest.raises(ReceiptError):
            Receipt.from_json(value)
    with pytest.raises(ValueError):
        wall_ms_from(1, 500)


def test_the_json_form_round_trips_and_verifies() -> None:
    text = json.dumps(golden_receipt().to_json())
    assert Receipt.from_json(json.loads(text)) == golden_receipt()
    verify_receipt(text, PUBLIC_KEY)
    with pytest.raises(ReceiptError) as malformed:
        verify_receipt('{"events": [{"id": "x"}], "digest": ""}', PUBLIC_KEY)
    assert malformed.value.kind == "malformed"


def test_a_receipt_file_is_named_by_a_str_or_a_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(golden_receipt().to_json(), indent=2))
    # The CLI's form, as a user passes it: a plain string path, a Path, or the text itself.
    assert verify_receipt(str(path), PUBLIC_KEY) == golden_receipt()
    assert verify_receipt(path, PUBLIC_KEY) == golden_receipt()
    assert verify_receipt("\n  " + path.read_text(), PUBLIC_KEY) == golden_receipt()
    missing = tmp_path / "no-such-receipt.json"
    with pytest.raises(ReceiptError) as unread:
        verify_receipt(str(missing), PUBLIC_KEY)
    assert unread.value.kind == "malformed"
    assert str(missing) in str(unread.value)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda d: "", "receipt: empty"),
        (lambda d: " \n", "receipt: empty"),
        (lambda d: "a\0b", "embedded null byte"),
        (lambda d: str(d), "Is a directory"),
        (lambda d: "x" * 5000, "x...x"),
        (lambda d: b"\xff\xfe{", "the text is not UTF-8"),
        (lambda d: d / "latin-1.json", "latin-1.json' is not UTF-8"),
        (lambda d: '{"events": [', "receipt: not JSON"),
    ],
)
def test_an_unreadable_receipt_is_malformed_and_says_why(
    tmp_path: pathlib.Path, make: Callable[[pathlib.Path], object], said: str
) -> None:
    (tmp_path / "latin-1.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ReceiptError) as refused:
        verify_receipt(make(tmp_path), PUBLIC_KEY)  # type: ignore[arg-type]
    assert refused.value.kind == "malformed"
    assert said in str(refused.value)
    assert len(str(refused.value)) < 400


def test_a_receipt_with_a_byte_order_mark_or_as_a_bytearray_is_read() -> None:
    text = json.dumps(golden_receipt().to_json())
    assert verify_receipt("\ufeff" + text, PUBLIC_KEY) == golden_receipt()
    assert verify_receipt(b"\xef\xbb\xbf" + text.encode(), PUBLIC_KEY) == golden_receipt()
    assert verify_receipt(bytearray(text.encode()), PUBLIC_KEY) == golden_receipt()


@pytest.mark.parametrize(
    ("events", "said"),
    [
        ('{"a": 1}\n{bad\n', "nor one JSON value per line (line 2"),
        ('{"events": [', "events: not JSON"),
        (b"5", "a JSON int, not an event or a list of events"),
        ({"id": ID_1}, "events[0].payload_base64 is missing"),
        (
            {"id": ID_1, "payload_base64": "e30=", "payload": '{"total": 9}'},
            "events[0].payload is not the payload that events[0].payload_base64 holds",
        ),
        ({"id": ID_1, "payload_base64": "e30=", "payload": None}, "events[0].payload is not"),
        ({"id": ID_1, "payload_base64": "Z"}, "events[0].payload_base64 is not valid base64"),
    ],
)
def test_malformed_events_are_named(events: object, said: str) -> None:
    with pytest.raises(ReceiptError) as refused:
        verify_receipt(golden_receipt(), events=events)  # type: ignore[arg-type]
    assert refused.value.kind == "malformed"
    assert said in str(refused.value)


def test_payload_base64_is_read_with_or_without_padding_as_the_cli_reads_it() -> None:
    # Past the payload, the events fail on their id: the padding itself was accepted.
    for unpadded in ("Zm9vYg", "Zm9vYg=", "Zm9vYg=="):
        with pytest.raises(ReceiptError) as refused:
            verify_receipt(golden_receipt(), events={"id": "x", "payload_base64": unpadded})
        assert "payload" not in str(refused.value)


def test_a_receipt_naming_another_key_than_the_one_that_verifies_it_is_refused() -> None:
    for named in ("ed25519:e40e84c5b5e4af31", "", "golden-key"):
        receipt = dataclasses.replace(golden_receipt(), signature_key_id=named)
        with pytest.raises(ReceiptError) as refused:
            verify_receipt(receipt, PUBLIC_KEY)
        assert refused.value.kind == "signature"
        assert "names key" in str(refused.value)
        # Without the key, its name is not looked at either.
        assert verify_receipt(receipt, events=golden_events()) == receipt


def test_arguments_of_the_wrong_type_are_a_type_error_naming_the_argument() -> None:
    for receipt in (None, 5, []):
        with pytest.raises(TypeError, match="^receipt must be"):
            verify_receipt(receipt, PUBLIC_KEY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^events must be"):
        verify_receipt(golden_receipt(), events=5)  # type: ignore[arg-type]


def test_a_server_receipt_verifies_offline_and_tampered_copies_do_not(
    client: Client, scope: str, public_key: str
) -> None:
    gate = unique("py-receipt-types")
    client.register_gate(gate, AllowedTypes(["OrderPlaced", "OrderPaid"]), scopes=[scope])
    try:
        entity = unique("order")
        receipt = client.append([
            NewEvent.json(scope, entity, "OrderPlaced", {"total": 12}, tags=["customer:42"],
                          metadata={"zeta": "1", "alpha": "2"}),
            NewEvent(scope, entity, "OrderPaid", bytes([0, 159, 255])),
        ])
    finally:
        client.remove_gate(gate)
    assert receipt.signature, "the server signs receipts (start it with --signing-key)"
    assert [g.name for g in receipt.gates] == [gate], "the receipt names the gate it passed"
    events = [client.get(committed.id) for committed in receipt.events]
    verify_receipt(receipt, public_key, events=events)
    verify_receipt(json.dumps(receipt.to_json()), public_key, events=events)
    for what, tamper in RECEIPT_TAMPERS:
        with pytest.raises(ReceiptError) as refused:
            verify_receipt(tamper(receipt), public_key)
        assert refused.value.kind == "signature", what
    with pytest.raises(ReceiptError) as payload:
        verify_receipt(receipt, public_key,
                       events=[dataclasses.replace(events[0], payload=b'{"total":13}'), events[1]])
    assert payload.value.kind == "event"
    with pytest.raises(ReceiptError) as position:
        verify_receipt(with_event(receipt, 0, position=receipt.first_position + 1),
                       events=events)
    assert "position differs" in str(position.value)
    with pytest.raises(ReceiptError) as count:
        verify_receipt(receipt, events=events[:1])
    assert count.value.kind == "count"
