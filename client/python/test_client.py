"""A client in another language: Python stubs generated from proto/ drive a running causewayd.

Proves the protos serve clients beyond Rust: append, read, subscribe, a gate denial with its
structured details, health, and a reflection listing. Run by .ci/run, which generates the stubs
into $CAUSEWAY_PY_STUBS and starts the server at $CAUSEWAY_SERVER (host:port).
"""

import os
import sys
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

sys.path.insert(0, os.environ["CAUSEWAY_PY_STUBS"])
from causeway.v1 import causeway_pb2, causeway_pb2_grpc, event_pb2, gate_pb2  # noqa: E402

SERVER = os.environ["CAUSEWAY_SERVER"]


@pytest.fixture(scope="module")
def channel():
    with grpc.insecure_channel(SERVER) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


@pytest.fixture(scope="module")
def store(channel):
    return causeway_pb2_grpc.EventStoreServiceStub(channel)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_append_then_read_entity_and_log(store):
    entity = unique("order")
    events = [
        event_pb2.NewEvent(scope="py", entity=entity, type="OrderPlaced", payload=b'{"total": 12}',
                           content_type="application/json", tags=["customer:42"]),
        event_pb2.NewEvent(scope="py", entity=entity, type="OrderPaid", payload=b"{}"),
    ]
    receipt = store.Append(causeway_pb2.AppendRequest(events=events)).receipt
    assert [c.version for c in receipt.events] == [1, 2]
    assert receipt.events[1].position == receipt.events[0].position + 1
    assert len(receipt.digest) == 32

    read = store.ReadEntity(causeway_pb2.ReadEntityRequest(scope="py", entity=entity, from_version=1, limit=10))
    assert [e.type for e in read.events] == ["OrderPlaced", "OrderPaid"]
    assert read.events[0].payload == b'{"total": 12}'

    log = store.ReadLog(causeway_pb2.ReadLogRequest(
        from_position=receipt.events[0].position, limit=10,
        filter=event_pb2.Filter(scopes=["py"], entity_prefix=entity)))
    assert [e.id for e in log.events] == [c.id for c in receipt.events]

    got = store.Get(causeway_pb2.GetRequest(id=receipt.events[0].id)).event
    assert got.entity == entity and got.hash == receipt.events[0].hash


def test_subscribe_catches_up_then_follows(store):
    entity = unique("sub")
    first = store.Append(causeway_pb2.AppendRequest(events=[
        event_pb2.NewEvent(scope="py", entity=entity, type="A", payload=b"1")])).receipt
    start = first.events[0].position
    stream = store.Subscribe(causeway_pb2.SubscribeRequest(
        from_position=start, filter=event_pb2.Filter(scopes=["py"], entity_prefix=entity)), timeout=30)
    seen = []
    caught_up = False
    for message in stream:
        kind = message.WhichOneof("message")
        if kind == "events":
            seen.extend(e.position for e in message.events.events)
        elif kind == "caught_up" and not caught_up:
            caught_up = True
            store.Append(causeway_pb2.AppendRequest(events=[
                event_pb2.NewEvent(scope="py", entity=entity, type="B", payload=b"2")]))
        if len(seen) == 2:
            break
    stream.cancel()
    assert caught_up
    assert seen[0] == start and seen[1] > start


def test_a_denial_carries_structured_details(store):
    name = unique("py-unique-email")
    store.RegisterGate(causeway_pb2.RegisterGateRequest(definition=gate_pb2.GateDefinition(
        name=name, scopes=["py-gates"], unique_tag=gate_pb2.UniqueTagRule(prefix="email:"))))
    email = f"email:{unique('a')}@example.com"
    claim = causeway_pb2.AppendRequest(events=[
        event_pb2.NewEvent(scope="py-gates", entity=unique("user"), type="UserRegistered", tags=[email])])
    store.Append(claim)
    claim.events[0].entity = unique("user")
    with pytest.raises(grpc.RpcError) as denied:
        store.Append(claim)
    assert denied.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(denied.value)
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert infos, "a denial carries a google.rpc.ErrorInfo"
    assert infos[0].reason == "TAG_TAKEN"
    assert infos[0].metadata["gate"] == name
    assert infos[0].metadata["tag"] == email


def test_bad_input_is_invalid_argument_naming_the_field(store):
    with pytest.raises(grpc.RpcError) as bad:
        store.Get(causeway_pb2.GetRequest(id="not-a-uuid"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "id" in bad.value.details()


def test_health_reports_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name for reply in replies for s in reply.list_services_response.service]
    assert "causeway.v1.EventStoreService" in names
    assert "grpc.health.v1.Health" in names
