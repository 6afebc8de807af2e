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


def required_env(name: str, to: str) -> str:
    """The environment variable `name`; the test fails saying to set it `to` what when unset."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"set {name} to {to}")
    return value


@pytest.fixture(scope="session")
def server() -> str:
    return required_env("CAUSEWAY_SERVER", "a running causewayd's host:port")


@pytest.fixture(scope="session")
def public_key() -> str:
    return required_env(
        "CAUSEWAY_PUBLIC_KEY",
        "the server's signing_public_key (start causewayd with --signing-key)",
    )


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
