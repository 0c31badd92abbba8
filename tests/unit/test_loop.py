"""Which event loop the server's processes run on (jobwire.server.loop)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from jobwire.server.loop import loop_factory


def test_uvloop_unless_asyncio_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBWIRE_EVENT_LOOP", raising=False)
    assert loop_factory() is uvloop.new_event_loop  # auto: installed with the server
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is asyncio.new_event_loop
    monkeypatch.setenv("JOBWIRE_EVENT_LOOP", "AsyncIO")
    assert loop_factory() is asyncio.new_event_loop


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="must be one of auto, uvloop, asyncio, not 'trio'"):
        loop_factory("trio")
