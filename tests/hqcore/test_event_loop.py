"""The event loop of hqstream's processes: uvloop by default, the standard library's on request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import uvloop
from pydantic import ValidationError

from hqcore.event_loop import use
from hqcore.settings import CommonSettings


@pytest.fixture
def policy_restored() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def loop_of_a_thread() -> asyncio.AbstractEventLoop:
    """The loop a thread makes for itself, as mode's service threads do (faust's consumer)."""
    made: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        made.append(loop)
        loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return made[0]


@pytest.mark.usefixtures("policy_restored")
def test_uvloop_serves_asyncio_run_and_the_loops_threads_make() -> None:
    assert use("uvloop") == f"uvloop {uvloop.__version__}"
    assert isinstance(asyncio.run(running_loop()), uvloop.Loop)
    assert isinstance(loop_of_a_thread(), uvloop.Loop)


@pytest.mark.usefixtures("policy_restored")
def test_asyncio_puts_the_standard_librarys_loop_back() -> None:
    use("uvloop")
    assert use("asyncio") == "asyncio"
    loop = asyncio.run(running_loop())
    assert isinstance(loop, asyncio.BaseEventLoop) and not isinstance(loop, uvloop.Loop)
    assert not isinstance(loop_of_a_thread(), uvloop.Loop)


def test_the_setting_is_uvloop_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HQ_EVENT_LOOP", raising=False)
    assert CommonSettings().event_loop == "uvloop"
    monkeypatch.setenv("HQ_EVENT_LOOP", "asyncio")
    assert CommonSettings().event_loop == "asyncio"
    monkeypatch.setenv("HQ_EVENT_LOOP", "tokio")
    with pytest.raises(ValidationError, match="event_loop"):
        CommonSettings()
