"""The live feed's hub: bounded per subscriber, drops told, backlog replay, no cost without subscribers."""

from __future__ import annotations

import time

import trio
from callsim.bridge.feed import FeedHub


def test_a_slow_subscriber_loses_events_and_is_told_how_many_while_the_publisher_never_waits():
    hub = FeedHub(queue=4)
    slow = hub.subscribe()
    fast = hub.subscribe()
    assert slow is not None and fast is not None
    got_fast = []
    for i in range(10):
        hub.publish("CA1", "transcript", text=f"line {i}")  # synchronous: returns at once, whatever the subscribers
        got_fast += fast.take()
    assert [e["text"] for e in got_fast] == [f"line {i}" for i in range(10)]  # a reader keeping up loses nothing
    batch = slow.take()
    assert batch[0]["kind"] == "dropped" and batch[0]["n"] == 6
    assert [e["text"] for e in batch[1:]] == ["line 0", "line 1", "line 2", "line 3"]
    hub.publish("CA1", "transcript", text="after")
    assert [e.get("text") for e in slow.take()] == ["after"]  # told once; the count starts again


def test_per_call_subscriber_sees_only_its_call_after_its_backlog():
    hub = FeedHub(queue=8, backlog=3)
    hub.publish("CA1", "call_started", from_number="+1555")
    for i in range(4):
        hub.publish("CA1", "transcript", text=str(i))
    hub.publish("CA2", "call_started")
    sub = hub.subscribe("CA1")
    assert [e.get("text") for e in sub.take()] == ["1", "2", "3"]  # the last 3 kept
    hub.publish("CA2", "transcript", text="other call")
    hub.publish("CA1", "transcript", text="4")
    assert [e["text"] for e in sub.take()] == ["4"]
    # a reconnecting EventSource names the last event it saw: no duplicate
    last = hub.backlog("CA1")[-2]["seq"]
    again = hub.subscribe("CA1", after=last)
    assert [e["text"] for e in again.take()] == ["4"]


def test_ended_calls_keep_their_backlog_boundedly():
    hub = FeedHub(ended_kept=2)
    for sid in ("CA1", "CA2", "CA3"):
        hub.publish(sid, "call_started")
        hub.publish(sid, "call_ended", status="completed")
    assert hub.backlog("CA1") is None
    assert [e["kind"] for e in hub.backlog("CA3")] == ["call_started", "call_ended"]
    assert not hub.is_live("CA3")
    hub.publish("CA3", "transcript", text="late")  # a write that raced the end lands on the ended call
    assert hub.backlog("CA3")[-1]["text"] == "late" and not hub.is_live("CA3")


def test_subscribers_are_capped_and_unsubscribe_frees_the_place():
    hub = FeedHub(max_subscribers=2)
    a, b = hub.subscribe(), hub.subscribe("CA1")
    assert hub.subscribe() is None
    hub.unsubscribe(b)
    assert hub.subscribe() is not None
    assert hub.subscribers == 2 and a is not None


async def test_events_wakes_on_publish_and_ends_on_close():
    hub = FeedHub()
    sub = hub.subscribe()
    seen = []

    async def reader():
        async for batch in sub.events(heartbeat_s=0.05):
            seen.append([e["kind"] for e in batch])

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await trio.sleep(0.12)  # quiet: empty batches (the SSE keep-alive)
        hub.publish("CA1", "call_started")
        await trio.sleep(0.01)
        hub.close()
    assert [] in seen and ["call_started"] in seen
    assert hub.subscribers == 0  # the iterator's end unsubscribed it


def test_publishing_without_subscribers_is_cheap():
    """Calls publish on events only (a few per turn); with nobody watching it must stay in the
    microseconds: a generous bound, so a loaded CI machine does not fail it."""
    hub = FeedHub()
    n = 20_000
    t0 = time.perf_counter()
    for i in range(n):
        hub.publish(f"CA{i % 50}", "transcript", role="caller", text="hello", item_id="item_1")
    per_event_us = (time.perf_counter() - t0) / n * 1e6
    assert per_event_us < 50, per_event_us
