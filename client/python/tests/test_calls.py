"""Every call of the wrapper against a live causewayd: appends under conditions and with an
idempotency key, each read, the head, gates, a dry run, plus the server's health and reflection
listing (what the first Python test checked)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from causeway_client import (
    NO_STREAM,
    AllowedTypes,
    Append,
    Client,
    Conflict,
    Expected,
    Filter,
    IdempotencyConflict,
    InvalidArgument,
    NewEvent,
    NotFound,
    QueryItem,
    UniqueTag,
)

from conftest import unique


def test_append_returns_a_receipt_with_consecutive_positions(client: Client, scope: str) -> None:
    entity = unique("order")
    receipt = client.append(
        [
            NewEvent.json(scope, entity, "OrderPlaced", {"total": 12}, tags=["customer:42"]),
            NewEvent(scope, entity, "OrderPaid", "{}", metadata={"by": "card"}),
        ],
        expected=[Expected(scope, entity, NO_STREAM)],
    )
    assert [committed.version for committed in receipt.events] == [1, 2]
    assert receipt.last_position == receipt.first_position + 1
    assert len(receipt.digest) == 32
    assert receipt.events[1].prev_hash == receipt.events[0].hash, "one entity's chain"


def test_an_idempotent_retry_returns_the_first_receipt(client: Client, scope: str) -> None:
    key = unique("key")
    events = [NewEvent(scope, unique("order"), "OrderPlaced", b"1")]
    first = client.append(events, idempotency_key=key)
    assert client.append(events, idempotency_key=key) == first
    with pytest.raises(IdempotencyConflict) as reused:
        client.append([NewEvent(scope, unique("order"), "Other", b"2")], idempotency_key=key)
    assert reused.value.key == key


def test_append_stream_answers_in_order_with_refusals_in_place(
    client: Client, scope: str
) -> None:
    entity = unique("order")

    def placed(version: int) -> Append:
        return Append(
            [NewEvent(scope, entity, "OrderPlaced", f"{version}")],
            expected=[Expected(scope, entity, version)],
        )

    appends = [
        Append([NewEvent(scope, entity, "OrderPlaced", b"0")], [Expected(scope, entity, NO_STREAM)]),
        placed(1),
        placed(7),  # a conflict: the entity is at version 2
        Append([NewEvent(scope, entity, "", b"no type")]),
        placed(2),
    ]
    outcomes = list(client.append_stream(iter(appends)))
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "Receipt",
        "Receipt",
        "Conflict",
        "InvalidArgument",
        "Receipt",
    ]
    conflict, invalid = outcomes[2], outcomes[3]
    assert isinstance(conflict, Conflict) and conflict.actual == 2, conflict
    assert isinstance(invalid, InvalidArgument)
    assert [field for field, _ in invalid.violations] == ["append.events[0].type"], invalid
    versions = [outcome.events[0].version for outcome in outcomes if not isinstance(outcome, Exception)]
    assert versions == [1, 2, 3]
    page = client.read_entity(scope, entity)
    assert [event.payload for event in page.events] == [b"0", b"1", b"2"]


def test_get_returns_the_event_as_written(client: Client, scope: str) -> None:
    entity = unique("order")
    receipt = client.append(
        [NewEvent.json(scope, entity, "OrderPlaced", {"total": 12}, tags=["a", "b"],
                       metadata={"k": "v"})]
    )
    event = client.get(receipt.events[0].id)
    assert (event.scope, event.entity, event.type) == (scope, entity, "OrderPlaced")
    assert event.json() == {"total": 12}
    assert event.content_type == "application/json"
    assert event.tags == ("a", "b") and event.metadata == {"k": "v"}
    assert event.position == receipt.first_position and event.hash == receipt.events[0].hash


def test_an_event_larger_than_grpcs_default_limit_is_read_whole(server: str, scope: str) -> None:
    # gRPC refuses answers over 4 MiB unless told otherwise; the server's answers go to ~30 MiB.
    # The client's own channel (not the fixture's) is what a user gets.
    entity = unique("blob")
    payload = b"x" * (5 * 1024 * 1024)
    with Client(server) as client:
        receipt = client.append([NewEvent(scope, entity, "Blob", payload)])
        assert client.get(receipt.events[0].id).payload == payload
        page = client.read_entity(scope, entity)
        assert [event.payload for event in page.events] == [payload]


def test_get_of_an_unknown_id_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get("01890a5d-ac96-774b-bcce-b302099a8057")


def test_read_entity_pages_forward_and_backward(client: Client, scope: str) -> None:
    entity = unique("order")
    client.append([NewEvent(scope, entity, f"E{idx}", b"") for idx in range(1, 6)])
    first = client.read_entity(scope, entity, limit=2)
    assert [event.version for event in first.events] == [1, 2] and not first.end
    rest = client.read_entity(scope, entity, from_version=first.next_version, limit=10)
    assert [event.type for event in rest.events] == ["E3", "E4", "E5"] and rest.end
    backward = client.read_entity(scope, entity, from_version=0, backward=True, limit=2)
    assert [event.version for event in backward.events] == [5, 4]


def test_read_log_pages_through_a_filter(client: Client, scope: str) -> None:
    tagged = unique("customer")
    # Separate appends: a forward page never ends inside an append.
    receipts = [
        client.append([NewEvent(scope, unique("order"), "OrderPlaced", b"", tags=[tagged])])
        for _ in range(5)
    ]
    client.append([NewEvent(scope, unique("order"), "Untagged", b"")])
    by_tag = Filter(scopes=[scope], items=[QueryItem(tags=[tagged])])
    page = client.read_log(receipts[0].first_position, filter=by_tag, limit=3)
    assert len(page.events) == 3 and not page.end
    rest = client.read_log(page.next_position, filter=by_tag, limit=3)
    assert len(rest.events) == 2
    every = list(client.iter_log(receipts[0].first_position, filter=by_tag, page_events=2))
    assert [event.position for event in every] == [r.first_position for r in receipts]
    backward = client.read_log(0, filter=Filter(scopes=[scope]), backward=True, limit=1)
    assert backward.events[0].type == "Untagged"


def test_a_forward_page_holds_whole_appends(client: Client, scope: str) -> None:
    receipt = client.append([NewEvent(scope, unique("order"), "E", b"") for _ in range(4)])
    page = client.read_log(receipt.first_position, filter=Filter(scopes=[scope]), limit=1)
    assert [event.position for event in page.events] == [c.position for c in receipt.events]


def test_head_is_at_or_past_the_last_append(client: Client, scope: str) -> None:
    receipt = client.append([NewEvent(scope, unique("order"), "OrderPlaced", b"")])
    head = client.head()
    assert head.position >= receipt.last_position
    assert len(head.digest) == 32


def test_dry_run_writes_nothing(client: Client, scope: str) -> None:
    entity = unique("order")
    receipt = client.dry_run([NewEvent(scope, entity, "OrderPlaced", b"")])
    assert receipt.events[0].version == 1 and receipt.signature == b""
    assert client.read_entity(scope, entity).events == []


def test_gates_register_list_and_remove(client: Client, scope: str) -> None:
    name = unique("py-types")
    registered = client.register_gate(
        name, AllowedTypes(["OrderPlaced"]), scopes=[scope], types=[]
    )
    try:
        gates = {gate.name: gate for gate in client.list_gates()}
        assert gates[name].version == registered.first_position
        assert gates[name].scopes == (scope,)
        assert gates[name].rule == AllowedTypes(("OrderPlaced",))
        replaced = client.register_gate(name, UniqueTag("email:"), scopes=[scope])
        assert {g.name: g for g in client.list_gates()}[name].version == replaced.first_position
    finally:
        client.remove_gate(name)
    assert name not in {gate.name for gate in client.list_gates()}
    with pytest.raises(NotFound):
        client.remove_gate(name)


def test_health_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = [s.name for reply in replies for s in reply.list_services_response.service]
    assert "causeway.v1.EventStoreService" in names
    assert "grpc.health.v1.Health" in names
