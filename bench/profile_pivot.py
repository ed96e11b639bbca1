"""Where a `pivot` command spends its time, by phase, with little profiler overhead.

    cd bench/work/chain-pivot && /work/venv/bin/python ../../profile_pivot.py run -q
    cd bench/work/multi-pivot && /work/venv/bin/python ../../profile_pivot.py run --all -q
    cd bench/work/remote-pivot && /work/venv/bin/python ../../profile_pivot.py push   # or pull

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
    ("pivot.runcmd", "open_workspace"),
    ("pivot.runcmd", "resolve_scope"),
    ("pivot.discovery", "Discovery.scan"),
    ("pivot.discovery", "Discovery.load"),
    ("pivot.discovery", "load_file"),
    ("pivot.loading", "_load_py"),
    ("pivot.loading", "_resolve"),
    ("pivot.pipeline", "Pipeline.register"),
    ("pivot.discovery", "Discovery.find_producer"),
    ("pivot.session", "build_graph"),
    ("pivot.engine", "Runner.run"),
    ("pivot.engine", "plan_graph"),
    ("pivot.plan", "Planner.decide"),
    ("pivot.plan", "Planner._lock"),
    ("pivot.plan", "Planner.fingerprint_of"),
    ("pivot.plan", "Planner.dep_hashes"),
    ("pivot.plan", "Planner._damaged_outputs"),
    ("pivot.plan", "run_key"),
    ("pivot.engine", "Runner._execute"),
    ("pivot.engine", "Runner._start_pool"),
    ("pivot.engine", "Runner._schedule"),
    ("pivot.engine", "Runner._submit"),
    ("pivot.engine", "Runner._complete"),
    ("pivot.engine", "Runner._redecide"),
    ("pivot.engine", "Runner._write_lock_if_changed"),
    ("pivot.engine", "write_lock"),
    ("pivot.engine", "Runner._finish"),
    ("pivot.storage.state", "StateDB.commit"),
    ("pivot.storage.state", "StateDB.close"),
    ("pivot.runcmd", "_summary"),
    # remote: push / fetch / pull (calls made from worker threads add up across threads)
    ("pivot.cli_remote", "_scope_locks"),
    ("pivot.storage.remote", "_fs_class"),
    ("pivot.storage.remote", "_open_s3"),
    ("pivot.storage.remote_index", "RemoteIndexCache.refresh"),
    ("pivot.storage.remote", "Remote.list_indexes"),
    ("pivot.storage.transfer", "push_outputs"),
    ("pivot.storage.transfer", "_expand"),
    ("pivot.storage.transfer", "_Pusher.plan"),
    ("pivot.storage.transfer", "_Pusher.run"),
    ("pivot.storage.transfer", "_Pusher._small"),
    ("pivot.storage.transfer", "_Pusher._large"),
    ("pivot.storage.packs", "PackBuilder.add"),
    ("pivot.storage.packs", "compress_file"),
    ("pivot.storage.remote", "Remote.put_bytes"),
    ("pivot.storage.remote", "Remote.put_file"),
    ("pivot.storage.transfer", "_Pusher.write_index"),
    ("pivot.storage.transfer", "pull_locks"),
    ("pivot.storage.transfer", "fetch_outputs"),
    ("pivot.storage.transfer", "_Fetcher.fetch"),
    ("pivot.storage.transfer", "_Fetcher.read"),
    ("pivot.storage.remote", "Remote.get_range"),
    ("pivot.storage.packs", "decode_blob"),
    ("pivot.storage.staging", "CacheStager.put_bytes"),
    ("pivot.storage.transfer", "_Fetcher._read_large"),
    ("pivot.storage.remote", "Remote.get_file"),
    ("pivot.storage.packs", "decompress_stream"),
    ("pivot.storage.staging", "CacheStager.commit"),
    ("pivot.storage.staging", "_syncfs"),
    ("pivot.storage.cache", "LocalCache.checkout"),
    ("pivot.storage.cache", "clone_or_copy"),
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
    import pivot.cli

    t_cli = time.perf_counter() - start
    start = time.perf_counter()
    import pivot.runcmd  # what `pivot run` imports lazily

    t_runcmd = time.perf_counter() - start
    missing = instrument()
    sys.argv = ["pivot", *sys.argv[1:]]
    start = time.perf_counter()
    code = 0
    try:
        pivot.cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    t_main = time.perf_counter() - start
    out = sys.stderr
    print(
        "\n-- pivot phase profile (inclusive ms; nested rows are part of the ones above)", file=out
    )
    print(f"{'import pivot.cli':<46} {t_cli * 1000:8.1f}", file=out)
    print(f"{'import pivot.runcmd (engine, storage, ...)':<46} {t_runcmd * 1000:8.1f}", file=out)
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
