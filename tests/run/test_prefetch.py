"""`run/prefetch.py`: the background fetch of cluster stages' outputs, with a real thread
and a fetch that records its batches (the fetch itself is `RemoteAccess.fetch`, tested
with the remote; a Dask run that uses it is in test_dask_executor.py)."""

from __future__ import annotations

import logging
import threading

from pivot.run.prefetch import Prefetch

A = ("a" * 64, "file")
B = ("b" * 64, "file")
C = ("c" * 64, "dir")


def test_queued_outputs_are_fetched_in_batches_each_once() -> None:
    batches: list[list[tuple[str, str]]] = []
    all_seen = threading.Event()

    def fetch(outputs):
        batches.append(outputs)
        if {o for batch in batches for o in batch} == {A, B, C}:
            all_seen.set()

    prefetch = Prefetch(fetch)
    prefetch.add([A, B])
    prefetch.add([A, C])  # A again
    assert all_seen.wait(30)
    prefetch.close()
    assert all(len(batch) == len(set(batch)) for batch in batches)
    assert len(batches) <= 2  # gathered, not one fetch per output


def test_close_waits_for_the_fetch_under_way_and_drops_the_queue() -> None:
    started = threading.Event()
    release = threading.Event()
    batches: list[list[tuple[str, str]]] = []

    def fetch(outputs):
        batches.append(outputs)
        started.set()
        release.wait(30)

    prefetch = Prefetch(fetch)
    prefetch.add([A])
    assert started.wait(30)
    prefetch.add([B])  # queued behind the fetch under way
    closer = threading.Thread(target=prefetch.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # still waiting for the fetch under way
    release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert batches == [[A]]  # B was left to the run's final fetch
    prefetch.add([C])  # after close: ignored
    assert batches == [[A]]


def test_a_failed_fetch_is_left_to_the_final_one(caplog) -> None:
    calls: list[list[tuple[str, str]]] = []
    second = threading.Event()

    def fetch(outputs):
        calls.append(outputs)
        if len(calls) == 1:
            raise OSError("connection reset")
        second.set()

    prefetch = Prefetch(fetch)
    with caplog.at_level(logging.DEBUG, logger="pivot.run.prefetch"):
        prefetch.add([A])
        while not calls:
            threading.Event().wait(0.01)
        prefetch.add([B])  # the thread carries on after a failure
        assert second.wait(30)
        prefetch.close()
    assert calls == [[A], [B]]
    assert "connection reset" in caplog.text
