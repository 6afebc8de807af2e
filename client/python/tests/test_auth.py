"""The `token` option against a server that enforces a policy: $CAUSEWAY_SECURED_SERVER runs
with --auth-file, under which the token $CAUSEWAY_TOKEN may append, read and subscribe in the
scopes `ci-*` and nothing else, and a call without credentials is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from causeway_client import Append, CausewayError, Client, Filter, NewEvent, Receipt

from conftest import required_env, unique

#: A subscription that delivers nothing for this long is closed, so a bug fails the test
#: instead of hanging it.
WATCHDOG_S = 30.0


@pytest.fixture(scope="module")
def secured() -> str:
    return required_env("CAUSEWAY_SECURED_SERVER", "a causewayd started with --auth-file")


@pytest.fixture(scope="module")
def token() -> str:
    return required_env("CAUSEWAY_TOKEN", "a token the secured server's policy names")


@pytest.fixture
def authorized(secured: str, token: str) -> Iterator[Client]:
    with Client(secured, token=token) as client:
        yield client


def refusal(client: Client, scope: str) -> CausewayError:
    with pytest.raises(CausewayError) as refused:
        client.append([NewEvent(scope, "order-1", "OrderPlaced", b"{}")])
    return refused.value


def test_a_token_goes_with_every_call_streams_included(authorized: Client) -> None:
    scope = unique("ci-py")
    receipt = authorized.append([NewEvent(scope, "order-1", "OrderPlaced", b'{"total":1}')])
    [streamed] = authorized.append_stream([Append([NewEvent(scope, "order-1", "OrderPaid", b"{}")])])
    assert isinstance(streamed, Receipt), streamed
    page = authorized.read_entity(scope, "order-1")
    assert [event.type for event in page.events] == ["OrderPlaced", "OrderPaid"]
    subscription = authorized.subscribe(receipt.first_position, filter=Filter(scopes=[scope]))
    timer = threading.Timer(WATCHDOG_S, subscription.close)
    timer.start()
    try:
        event = next(iter(subscription))
    finally:
        timer.cancel()
        subscription.close()
    assert (event.scope, event.position) == (scope, receipt.first_position)


def test_a_call_without_a_token_is_unauthenticated(secured: str) -> None:
    with Client(secured) as client:
        refused = refusal(client, unique("ci-py"))
    assert refused.status_code == grpc.StatusCode.UNAUTHENTICATED


def test_a_wrong_token_is_unauthenticated(secured: str) -> None:
    with Client(secured, token="not-the-token") as client:
        refused = refusal(client, unique("ci-py"))
    assert refused.status_code == grpc.StatusCode.UNAUTHENTICATED


def test_a_scope_outside_the_grant_is_permission_denied(authorized: Client) -> None:
    refused = refusal(authorized, unique("other-py"))
    assert refused.status_code == grpc.StatusCode.PERMISSION_DENIED
