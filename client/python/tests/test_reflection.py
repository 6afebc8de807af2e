"""A denied append read the way grpcurl reads it: nothing compiled in but google.rpc.Status;
the request type, and the ErrorInfo type inside the status details, are resolved through the
server's reflection service. So a client in any language, with no Causeway stubs, can read a
denial's gate and code; this fails when the server's reflection does not serve
google/rpc/error_details.proto."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from causeway_client import Client, UniqueTag

from conftest import unique

APPEND_METHOD = "/causeway.v1.EventStoreService/Append"


def test_a_denial_decodes_through_reflection(
    client: Client, channel: grpc.Channel, scope: str
) -> None:
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    append_request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("causeway.v1.AppendRequest")
    )
    append = channel.unary_unary(
        APPEND_METHOD, request_serializer=lambda message: message.SerializeToString()
    )
    name = unique("py-reflected")
    email = f"email:{unique('r')}@example.com"
    client.register_gate(name, UniqueTag("email:"), scopes=[scope])
    try:
        def claim() -> object:
            body = {"events": [{"scope": scope, "entity": unique("user"),
                                "type": "UserRegistered", "tags": [email]}]}
            return json_format.ParseDict(body, append_request())

        append(claim(), timeout=10)
        with pytest.raises(grpc.RpcError) as denied:
            append(claim(), timeout=10)
    finally:
        client.remove_gate(name)
    assert denied.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = dict(denied.value.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    type_names = [detail.type_url.rsplit("/", 1)[-1] for detail in status.details]
    assert "google.rpc.ErrorInfo" in type_names
    try:
        info_type = pool.FindMessageTypeByName("google.rpc.ErrorInfo")
    except (KeyError, grpc.RpcError) as err:
        answer = err.details() if isinstance(err, grpc.RpcError) else str(err)
        pytest.fail(
            "the server's reflection does not serve google.rpc.ErrorInfo "
            "(google/rpc/error_details.proto), so a client that reads types through reflection "
            f"cannot decode a denial's details; reflection answered: {answer}"
        )
    info = message_factory.GetMessageClass(info_type)()
    info.ParseFromString(status.details[type_names.index("google.rpc.ErrorInfo")].value)
    assert info.reason == "TAG_TAKEN"
    assert info.domain == "causeway"
    assert info.metadata["gate"] == name
    assert info.metadata["tag"] == email
