"""The state db shared by threads (pull's checkout threads feed the stat cache while
others read and write cached indexes): real threads hammer one `StateDB` with every
operation at once; nothing raises and nothing written is lost."""

from __future__ import annotations

import os
import pathlib
import threading

from pivot.cache.state import StateDB

THREADS = 8
ROUNDS = 100


def test_threads_hammering_one_state_db(tmp_path: pathlib.Path):
    db = StateDB(tmp_path / "state.db")
    probe = tmp_path / "probe"
    probe.write_text("x")
    st = os.stat(probe)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(ROUNDS):
                key = f"{t}/{i}"
                db.put("ns", key, key.encode())
                assert db.get("ns", key) == key.encode()
                db.record(f"file/{key}", st, f"hash-{key}")
                assert db.lookup(f"file/{key}", st) == f"hash-{key}"
                if i % 7 == 0:
                    db.commit()
                if i % 11 == 0:
                    db.put("gone", key, b"x")
                    db.delete("gone", key)
                if i % 13 == 0:
                    db.items("ns")
        except BaseException as exc:  # reported below, with the thread that raised it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [repr(e) for e in errors] == []
    db.close()

    again = StateDB(tmp_path / "state.db")
    assert len(again.items("ns")) == THREADS * ROUNDS
    assert again.items("gone") == []
    for t in range(THREADS):
        for i in range(ROUNDS):
            assert again.lookup(f"file/{t}/{i}", st) == f"hash-{t}/{i}"
    again.close()
