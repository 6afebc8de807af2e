"""Refusals arrive as typed exceptions carrying what the server's status details say: a gate
denial's gate, code and facts; a conflict's entity, expected and actual versions; an invalid
argument's field path."""

from __future__ import annotations

import grpc
import pytest

from causeway_client import (
    NO_STREAM,
    Cel,
    Client,
    Conflict,
    Denied,
    Expected,
    Filter,
    InvalidArgument,
    NewEvent,
    Timestamp,
    UniqueTag,
)
from causeway_client.pb import causeway_pb2, event_pb2

from conftest import unique


def test_a_gate_denial_carries_gate_code_and_facts(client: Client, scope: str) -> None:
    name = unique("py-unique-email")
    client.register_gate(name, UniqueTag("email:"), scopes=[scope])
    try:
        email = f"email:{unique('a')}@example.com"
        client.append([NewEvent(scope, unique("user"), "UserRegistered", tags=[email])])
        with pytest.raises(Denied) as denied:
            client.append([NewEvent(scope, unique("user"), "UserRegistered", tags=[email])])
    finally:
        client.remove_gate(name)
    assert denied.value.status_code == grpc.StatusCode.FAILED_PRECONDITION
    assert denied.value.gate == name
    assert denied.value.code == "TAG_TAKEN"
    assert denied.value.facts["tag"] == email
    assert email in denied.value.message


def test_a_cel_denial_names_its_code(client: Client, scope: str) -> None:
    name = unique("py-small-orders")
    client.register_gate(
        name, Cel("event.payload.total < 1000"), scopes=[scope], types=["OrderPlaced"]
    )
    try:
        client.append([NewEvent.json(scope, unique("order"), "OrderPlaced", {"total": 5})])
        with pytest.raises(Denied) as denied:
            client.append([NewEvent.json(scope, unique("order"), "OrderPlaced", {"total": 5000})])
    finally:
        client.remove_gate(name)
    assert (denied.value.gate, denied.value.code) == (name, "CEL_FALSE")


def test_a_stale_expectation_is_a_conflict_and_writes_nothing(client: Client, scope: str) -> None:
    entity = unique("order")
    client.append([NewEvent(scope, entity, "OrderPlaced", b"")])
    with pytest.raises(Conflict) as conflict:
        client.append(
            [NewEvent(scope, entity, "OrderShipped", b"")], expected=[Expected(scope, entity, 3)]
        )
    assert (conflict.value.scope, conflict.value.entity) == (scope, entity)
    assert conflict.value.expected == "3"
    assert conflict.value.actual == 1
    with pytest.raises(Conflict) as exists:
        client.append([NewEvent(scope, entity, "Again", b"")],
                      expected=[Expected(scope, entity, NO_STREAM)])
    assert exists.value.actual == 1
    assert [event.type for event in client.read_entity(scope, entity).events] == ["OrderPlaced"]


def test_an_invalid_field_is_named(client: Client, scope: str) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        client.append([NewEvent(scope, unique("order"), "E", b"", causation=["not-a-uuid"])])
    assert invalid.value.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.field == "events[0].causation[0]"
    assert "not-a-uuid" in invalid.value.violations[0][1]
    with pytest.raises(InvalidArgument) as bad_id:
        client.get("not-a-uuid")
    assert bad_id.value.field == "id"


def test_a_wall_time_finer_than_a_millisecond_is_refused_not_rounded(client: Client) -> None:
    since = event_pb2.Filter()
    since.since.wall.seconds = 1_700_000_000
    since.since.wall.nanos = 1
    request = causeway_pb2.ReadLogRequest(from_position=1, limit=1, filter=since)
    with pytest.raises(InvalidArgument) as invalid:
        client._call(client.stub.ReadLog, request)
    assert invalid.value.field == "filter.since.wall.nanos"
    # A whole-millisecond time from a Timestamp passes, and reads what is at or after it.
    page = client.read_log(1, filter=Filter(since=Timestamp(wall_ms=1_700_000_000_001)), limit=1)
    assert all(event.timestamp.wall_ms >= 1_700_000_000_001 for event in page.events)
