"""Subscriptions as iterators: catch-up then live, and a resume after the stream is cut that
delivers every event once, in order, with no gap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from causeway_client import Client, Event, Filter, NewEvent, Subscription

from conftest import unique
from proxy import Proxy

#: A subscription that delivers nothing for this long is cancelled, so a bug fails the test
#: instead of hanging it.
WATCHDOG_S = 30.0


@pytest.fixture
def watchdog() -> Iterator[list[Subscription]]:
    """Subscriptions appended here are closed after WATCHDOG_S, and at the end of the test."""
    watched: list[Subscription] = []
    timer = threading.Timer(WATCHDOG_S, lambda: [sub.close() for sub in watched])
    timer.start()
    yield watched
    timer.cancel()
    for sub in watched:
        sub.close()


def take(subscription: Subscription, n_events: int) -> list[Event]:
    events = [event for _, event in zip(range(n_events), subscription)]
    assert len(events) == n_events, f"the subscription ended after {len(events)} events"
    return events


def test_subscribe_catches_up_then_follows(
    client: Client, scope: str, watchdog: list[Subscription]
) -> None:
    entity = unique("sub")
    first = client.append([NewEvent(scope, entity, "A", b"1")])
    sub = client.subscribe(first.first_position, filter=Filter(scopes=[scope]))
    watchdog.append(sub)
    assert take(sub, 1)[0].type == "A"
    live = client.append([NewEvent(scope, entity, "B", b"2")])
    event = take(sub, 1)[0]
    assert (event.type, event.position) == ("B", live.first_position)
    assert sub.caught_up and sub.position == live.first_position


def test_subscribe_from_now_skips_the_past(
    client: Client, scope: str, watchdog: list[Subscription]
) -> None:
    entity = unique("sub")
    client.append([NewEvent(scope, entity, "Past", b"")])
    sub = client.subscribe(None, filter=Filter(scopes=[scope]))
    watchdog.append(sub)
    # The stream starts when iteration does; wait until it has caught up before appending.
    started = threading.Event()
    events: list[Event] = []

    def read() -> None:
        iterator = iter(sub)
        started.set()
        events.append(next(iterator))

    reader = threading.Thread(target=read)
    reader.start()
    started.wait(10)
    for _ in range(100):
        if sub.caught_up:
            break
        time.sleep(0.05)
    assert sub.caught_up, "a from-now subscription reports catching up at once"
    client.append([NewEvent(scope, entity, "Future", b"")])
    reader.join(WATCHDOG_S)
    assert [event.type for event in events] == ["Future"]


def test_a_dropped_stream_resumes_after_the_last_position_seen(
    client: Client, server: str, scope: str, watchdog: list[Subscription]
) -> None:
    entity = unique("sub")
    before = client.append([NewEvent(scope, entity, f"E{idx}", b"") for idx in range(1, 4)])
    with Proxy(server) as proxy, Client(proxy.address) as proxied:
        sub = proxied.subscribe(before.first_position, filter=Filter(scopes=[scope]))
        watchdog.append(sub)
        seen = take(sub, 2)
        assert proxy.drop() > 0, "the subscription's connection was open"
        after = client.append([NewEvent(scope, entity, f"E{idx}", b"") for idx in range(4, 6)])
        seen += take(sub, 3)
        assert sub.resumes >= 1, "the stream was cut, so it must have resumed"
    expected = [c.position for c in before.events] + [c.position for c in after.events]
    assert [event.position for event in seen] == expected
    assert [event.type for event in seen] == ["E1", "E2", "E3", "E4", "E5"]
