"""Where a `pivot` command spends its time, by phase, with little profiler overhead.

    cd bench/work/chain-pivot && .venv/bin/python ../../profile_pivot.py run -q
    cd bench/work/multi-pivot && .venv/bin/python ../../profile_pivot.py run --all -q
    cd bench/work/remote-pivot && .venv/bin/python ../../profile_pivot.py push   # or pull

Runs the CLI in-process after wrapping a few dozen of Pivot's functions with
perf_counter accumulators (inclusive times, so nested phases add up within their parent).
cProfile instruments every call and roughly doubles a no-op run; this stays within a few
percent. Import time is measured first, module by module. Functions that do not exist in
the installed Pivot are skipped, so the script survives refactors. Functions called from
worker threads (push, fetch and checkout pools) add up across threads, so their rows can
exceed the wall time.
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections import defaultdict

T0 = time.perf_counter()

# (module, attribute path) of the functions to time, roughly in call order.
TARGETS = [
    ("pivot.services.stages", "open_workspace"),
    ("pivot.services.stages", "resolve_scope"),
    ("pivot.discover.finder", "Discovery.scan"),
    ("pivot.discover.finder", "Discovery.load"),
    ("pivot.discover.finder", "load_file"),
    ("pivot.discover.loading", "_load_py"),
    ("pivot.discover.loading", "_resolve"),
    ("pivot.define.pipeline", "Pipeline.register"),
    ("pivot.discover.finder", "Discovery.find_producer"),
    ("pivot.discover.scope", "build_graph"),
    ("pivot.services.stages", "_verdict_key"),
    ("pivot.run.verdict_memo", "definition_digest"),
    ("pivot.run.verdict_memo", "command_key"),
    ("pivot.services.stages", "_replayed"),
    ("pivot.run.verdict_memo", "load"),
    ("pivot.run.verdict_memo", "hit"),
    ("pivot.services.stages", "_store_verdict"),
    ("pivot.run.scheduler", "Runner.run"),
    ("pivot.run.scheduler", "plan_graph"),
    ("pivot.run.plan", "Planner.decide"),
    ("pivot.run.plan", "Planner.lock_of"),
    ("pivot.run.plan", "Planner.fingerprint_of"),
    ("pivot.run.plan", "Planner.dep_hashes"),
    ("pivot.run.plan", "Planner._damaged_outputs"),
    ("pivot.run.plan", "run_key"),
    ("pivot.run.scheduler", "Runner._execute"),
    ("pivot.run.scheduler", "Runner._start_executor"),
    ("pivot.run.scheduler", "Runner._schedule"),
    ("pivot.run.scheduler", "Runner._submit"),
    ("pivot.run.scheduler", "Runner._complete"),
    ("pivot.run.scheduler", "Runner._redecide"),
    ("pivot.run.scheduler", "Runner._write_lock_if_changed"),
    ("pivot.run.scheduler", "write_lock"),
    ("pivot.run.scheduler", "Runner._finish"),
    ("pivot.cache.state", "StateDB.commit"),
    ("pivot.cache.state", "StateDB.close"),
    ("pivot.cli.render", "run_summary"),
    # remote: push / fetch / pull (calls made from worker threads add up across threads)
    ("pivot.services.scope", "command_locks"),
    ("pivot.remote.options", "fs_class"),
    ("pivot.remote.stores", "open_remote"),
    ("pivot.remote.index_cache", "RemoteIndexCache.refresh"),
    ("pivot.remote.stores", "Remote.list_indexes"),
    ("pivot.remote.transfer", "push_outputs"),
    ("pivot.remote.transfer", "_expand"),
    ("pivot.remote.transfer", "_Pusher.plan"),
    ("pivot.remote.transfer", "_Pusher.run"),
    ("pivot.remote.transfer", "_Pusher._small"),
    ("pivot.remote.transfer", "_Pusher._large"),
    ("pivot.remote.packs", "PackBuilder.add"),
    ("pivot.remote.packs", "compresses"),
    ("pivot.remote.stores", "Remote.put_bytes"),
    ("pivot.remote.transfer", "_Pusher.write_index"),
    ("pivot.remote.transfer", "pull_locks"),
    ("pivot.remote.transfer", "fetch_outputs"),
    ("pivot.remote.transfer", "_Fetcher.fetch"),
    ("pivot.remote.transfer", "_Fetcher.read"),
    ("pivot.remote.stores", "Remote.get_range"),
    ("pivot.cache.encoding", "decode_blob"),
    ("pivot.cache.batch", "CacheBatch.put_bytes"),
    ("pivot.remote.transfer", "_Fetcher._read_large"),
    ("pivot.remote.stores", "Remote.get_file"),
    ("pivot.remote.packs", "decompress_stream"),
    ("pivot.cache.batch", "CacheBatch.commit"),
    ("pivot.cache.batch", "_syncfs"),
    ("pivot.cache.checkout", "_checkout"),
]

TOTALS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _wrap(label: str, func):
    @functools.wraps(func)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            TOTALS[label] += time.perf_counter() - start
            CALLS[label] += 1

    return timed


def instrument() -> list[str]:
    """Wrap every target that exists; return the labels of those that do not."""
    missing = []
    for module_name, path in TARGETS:
        label = f"{module_name.removeprefix('pivot.')}.{path}"
        try:
            owner = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for name in parents:
                owner = getattr(owner, name)
            func = getattr(owner, attr)
        except (ImportError, AttributeError):
            missing.append(label)
            continue
        setattr(owner, attr, _wrap(label, func))
    return missing


def main() -> None:
    start = time.perf_counter()
    import pivot.cli.main

    t_cli = time.perf_counter() - start
    start = time.perf_counter()
    import pivot.services.stages  # what `pivot run` imports lazily

    t_runcmd = time.perf_counter() - start
    missing = instrument()
    sys.argv = ["pivot", *sys.argv[1:]]
    start = time.perf_counter()
    code = 0
    try:
        pivot.cli.main.main()
    except SystemExit as exc:
        code = exc.code or 0
    t_main = time.perf_counter() - start
    out = sys.stderr
    print(
        "\n-- pivot phase profile (inclusive ms; nested rows are part of the ones above)", file=out
    )
    print(f"{'import pivot.cli.main':<46} {t_cli * 1000:8.1f}", file=out)
    print(
        f"{'import pivot.services.stages (engine, storage, ...)':<46} {t_runcmd * 1000:8.1f}",
        file=out,
    )
    print(f"{'cli.main()':<46} {t_main * 1000:8.1f}", file=out)
    for module_name, path in TARGETS:
        label = f"{module_name.removeprefix('pivot.')}.{path}"
        if CALLS.get(label):
            ms = TOTALS[label] * 1000
            print(f"  {label:<44} {ms:8.1f}  x{CALLS[label]}", file=out)
    print(f"{'total in this process':<46} {(time.perf_counter() - T0) * 1000:8.1f}", file=out)
    if missing:
        print(f"(not found, skipped: {', '.join(missing)})", file=out)
    sys.exit(code)


if __name__ == "__main__":
    main()
