"""Bulk work runs without cyclic collections and frees its own cycles at the end."""

from __future__ import annotations

import gc
import weakref

import pytest

from budgetradar.memory import collector_paused
from tests.engine_helpers import approved, run_worker, sandbox_world


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_cycles_made_in_a_paused_block_are_freed_when_it_ends():
    with collector_paused():
        node = Node()
        alive = weakref.ref(node)
        del node
        assert not gc.isenabled()
        assert alive() is not None  # nothing collects it meanwhile
    assert gc.isenabled()
    assert alive() is None


def test_a_nested_pause_leaves_the_collector_to_the_outer_one():
    with collector_paused():
        with collector_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_pauses_that_overlap_out_of_order_count_as_one():
    """Two threads' pauses (a web request's dispatch and a preflight, say) may end in any
    order: the collector stays paused until the last ends, and comes back then."""
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_process_that_turned_the_collector_off_keeps_it_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_when_the_block_raises():
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


@pytest.mark.django_db(transaction=True)
def test_an_engine_unit_and_the_dispatch_run_with_the_collector_paused(tenant, approver, monkeypatch):
    from actions.services import dispatch
    from platforms.sandbox.executor import SandboxExecutor

    world = sandbox_world(tenant)
    approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    seen = []
    write, enqueue = SandboxExecutor._write, dispatch._enqueue_into_job

    def spy_write(self, call, batch):
        seen.append(("write", gc.isenabled()))
        return write(self, call, batch)

    def spy_enqueue(*args, **kwargs):
        seen.append(("dispatch", gc.isenabled()))
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(SandboxExecutor, "_write", spy_write)
    monkeypatch.setattr(dispatch, "_enqueue_into_job", spy_enqueue)
    [report] = run_worker()
    assert report.succeeded == 1
    assert seen == [("dispatch", False), ("write", False)]
    assert gc.isenabled()
