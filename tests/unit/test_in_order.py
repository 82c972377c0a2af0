"""InOrder: the usage agent's background writes, one batch after the other."""

from __future__ import annotations

import asyncio

import pytest

from stream_processors import agents
from stream_processors.agents import InOrder


def test_tasks_run_one_after_the_other_while_the_caller_goes_on() -> None:
    events: list[str] = []

    async def write(name: str, delay: float) -> None:
        events.append(f"{name} starts")
        await asyncio.sleep(delay)
        events.append(f"{name} done")

    async def main() -> None:
        order = InOrder("writes", stopping=lambda: False)
        await order.then(write("a", 0.05))
        events.append("caller folds b")  # while a is still writing
        await order.then(write("b", 0.0))  # waits for a first
        await order.drain(5)

    asyncio.run(main())
    assert events == ["caller folds b", "a starts", "a done", "b starts", "b done"]  # a starts at the next await


def test_a_failed_write_exits_unless_the_app_is_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[str] = []
    monkeypatch.setattr(agents, "exit_for_restart", lambda what, exc: exits.append(f"{what}: {exc}"))

    async def fail() -> None:
        raise RuntimeError("broker gone")

    async def main(stopping: bool) -> None:
        order = InOrder("writes", stopping=lambda: stopping)
        await order.then(fail())
        await order.drain(5)
        await asyncio.sleep(0)  # the done-callback runs

    asyncio.run(main(stopping=False))
    assert exits == ["writes: broker gone"]
    asyncio.run(main(stopping=True))
    assert exits == ["writes: broker gone"]  # only logged while stopping


def test_a_cancelled_caller_leaves_the_write_in_flight_and_drops_the_next() -> None:
    events: list[str] = []

    async def write(name: str) -> None:
        await asyncio.sleep(0.05)
        events.append(f"{name} done")

    async def main() -> None:
        order = InOrder("writes", stopping=lambda: True)
        await order.then(write("a"))
        nxt = write("b")
        caller = asyncio.ensure_future(order.then(nxt))
        await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await order.drain(5)
        assert nxt.cr_frame is None  # closed, never run: its batch is replayed

    asyncio.run(main())
    assert events == ["a done"]
