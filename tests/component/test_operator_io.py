"""The operator's API plumbing under load: a 429 is retried after the server's
Retry-After instead of failing the round; Events are aggregated and wait while a round's
writes are in flight; the informer lists again after 410 Gone and resumes a watch the
server ended from the last version it saw."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from migweaver.k8s.client import ApiError, JsonDict, Listing, backoff_s, call_json
from migweaver.k8s.events import EventQueue
from migweaver.k8s.informer import inform


class Answer:
    """A raw aiohttp-like answer (`_preload_content=False`)."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None):
        self.status = status
        self.reason = "Too Many Requests" if status == 429 else "OK"
        self.headers = dict(headers or {})
        self._body = body
        self.released = False

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        self.released = True


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        pytest.param(0, "2", 2.0, id="server-says-2s"),
        pytest.param(0, None, 0.1, id="first-backoff"),
        pytest.param(3, None, 0.8, id="doubling"),
        pytest.param(0, "120", 5.0, id="capped"),
        pytest.param(1, "soon", 0.2, id="unreadable-header"),
    ],
)
def test_backoff(attempt: int, retry_after: str | None, expected: float) -> None:
    assert backoff_s(attempt, retry_after) == pytest.approx(expected)


async def test_a_429_is_retried_until_the_server_answers(monkeypatch: Any) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    answers = [
        Answer(429, b'{"kind":"Status"}', {"Retry-After": "1"}),
        Answer(429, b'{"kind":"Status"}'),
        Answer(200, b'{"metadata": {"name": "a", "resourceVersion": "7"}}'),
    ]

    async def method(*_: Any, **kwargs: Any) -> Answer:
        assert kwargs["_preload_content"] is False
        return answers.pop(0)

    body = await call_json(method, call="patch pod a")
    assert body == {"metadata": {"name": "a", "resourceVersion": "7"}}
    assert slept == [1.0, 0.2]


async def test_errors_keep_their_status_and_body() -> None:
    async def method(*_: Any, **__: Any) -> Answer:
        return Answer(409, b'{"reason": "Conflict", "message": "the object has been modified"}')

    with pytest.raises(ApiError) as raised:
        await call_json(method, call="patch pod a")
    assert raised.value.status == 409
    assert "the object has been modified" in str(raised.value)


async def test_a_server_that_stays_overloaded_fails_the_call(monkeypatch: Any) -> None:
    async def sleep(_: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", sleep)

    async def method(*_: Any, **__: Any) -> Answer:
        return Answer(429, b"{}")

    with pytest.raises(ApiError) as raised:
        await call_json(method, call="patch pod a")
    assert raised.value.status == 429


class Recorder:
    component = "test"

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, int]] = []

    async def record(
        self, involved: Mapping[str, Any], reason: str, message: str, _type: str, count: int
    ) -> None:
        self.posted.append((involved["metadata"]["name"], reason, count))


def pod(name: str) -> JsonDict:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": name}}


async def test_the_same_event_is_posted_once_with_its_count() -> None:
    recorder = Recorder()
    queue = EventQueue(recorder)  # type: ignore[arg-type]
    for _ in range(3):
        await queue.record(pod("a"), "MigPlanned", "on node-1")
    await queue.record(pod("b"), "MigPlanned", "on node-1")
    await queue.record(pod("a"), "MigReady", "released")
    await queue.flush()
    assert sorted(recorder.posted) == [
        ("a", "MigPlanned", 3),
        ("a", "MigReady", 1),
        ("b", "MigPlanned", 1),
    ]


async def test_events_wait_while_the_rounds_writes_are_in_flight() -> None:
    recorder = Recorder()
    queue = EventQueue(recorder, max_hold_s=30)  # type: ignore[arg-type]
    posting = asyncio.create_task(queue.run())
    try:
        queue.open.clear()  # a round writes
        await queue.record(pod("a"), "MigPlanned", "on node-1")
        await asyncio.sleep(0.05)
        assert recorder.posted == []
        queue.open.set()  # the round is done
        await asyncio.sleep(0.05)
        assert recorder.posted == [("a", "MigPlanned", 1)]
    finally:
        posting.cancel()
        await asyncio.gather(posting, return_exceptions=True)


async def test_events_are_not_held_for_ever() -> None:
    recorder = Recorder()
    queue = EventQueue(recorder, max_hold_s=0.05)  # type: ignore[arg-type]
    queue.open.clear()  # rounds that never end
    await queue.record(pod("a"), "MigPlanned", "on node-1")
    await asyncio.wait_for(queue.flush(), 5)
    assert recorder.posted == [("a", "MigPlanned", 1)]


async def test_a_full_queue_drops_new_events_not_memory() -> None:
    recorder = Recorder()
    queue = EventQueue(recorder, max_pending=2)  # type: ignore[arg-type]
    for name in "abc":
        await queue.record(pod(name), "MigPlanned", "on node-1")
    assert len(queue) == 2
    await queue.flush()
    assert [p[0] for p in recorder.posted] == ["a", "b"]


def obj(name: str, version: int) -> JsonDict:
    return {"metadata": {"name": name, "resourceVersion": str(version)}}


async def test_the_informer_resumes_and_lists_again_after_410() -> None:
    """Watch 1 ends normally (resume from the last version seen); watch 2 answers 410
    (list again, watch from the new list's version)."""
    lists = [Listing([obj("a", 1)], "5"), Listing([obj("a", 9)], "20")]
    watched_from: list[str] = []
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def list_objects() -> Listing:
        return lists.pop(0)

    async def watch(version: str) -> AsyncIterator[tuple[str, JsonDict]]:
        watched_from.append(version)
        if len(watched_from) == 1:
            yield "MODIFIED", obj("a", 6)
            yield "BOOKMARK", obj("", 8)
        elif len(watched_from) == 2:
            raise ApiError(410, "too old", "watch")
        else:
            done.set()
            await asyncio.Event().wait()

    def on_list(listing: Listing) -> None:
        seen.append(("LIST", listing.resource_version))

    def on_event(kind: str, body: JsonDict) -> None:
        seen.append((kind, body["metadata"]["resourceVersion"]))

    task = asyncio.create_task(inform("things", list_objects, watch, on_list, on_event))
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert watched_from == ["5", "8", "20"]
    assert seen == [("LIST", "5"), ("MODIFIED", "6"), ("LIST", "20")]
