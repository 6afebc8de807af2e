"""Fixtures shared by the tests: the live server, clients, and unique names.

The tests drive a running causewayd at $CAUSEWAY_SERVER (host:port); receipt signatures are
checked under $CAUSEWAY_PUBLIC_KEY (64 hex digits, the `signing_public_key` causewayd logs when
started with --signing-key). Every name a test writes is made unique per run and every gate a
test registers is removed, so the suite passes again against the same server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import grpc
import pytest

from causeway_client import Client


def unique(prefix: str) -> str:
    """`prefix` with a random suffix, unique per call (and so per run)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def server() -> str:
    address = os.environ.get("CAUSEWAY_SERVER")
    if not address:
        pytest.fail("set CAUSEWAY_SERVER to a running causewayd's host:port")
    return address


@pytest.fixture(scope="session")
def public_key() -> str:
    key = os.environ.get("CAUSEWAY_PUBLIC_KEY")
    if not key:
        pytest.fail(
            "set CAUSEWAY_PUBLIC_KEY to the server's signing_public_key "
            "(start causewayd with --signing-key)"
        )
    return key


@pytest.fixture(scope="session")
def channel(server: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


@pytest.fixture(scope="session")
def client(server: str, channel: grpc.Channel) -> Client:
    return Client(server, channel=channel)


@pytest.fixture
def scope() -> str:
    """A scope of this test's own, so its gates and reads see no other test's events."""
    return unique("py")
