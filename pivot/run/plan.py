"""Deciding, per stage, whether to skip, restore or run it, and saying why."""

from __future__ import annotations

import contextlib
import functools
import json
import json.encoder
import logging
from typing import TYPE_CHECKING, Any

import blake3

from pivot.cache import tracked
from pivot.cache.hashing import DIR, FILE, TreeEntry, encode_tree, hash_bytes
from pivot.cache.linked import damaged_objects
from pivot.cache.runs import decode_record
from pivot.define.metric_values import flatten_params
from pivot.errors import CorruptFile, DefinitionError, PivotError, UnsafePath
from pivot.fingerprint import canonical_json, fingerprint, fingerprint_digest
from pivot.fingerprint.canonical import loader_text
from pivot.run.lockfile import Lock, declares, read_lock

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec
    from pivot.discover.graph import Graph
    from pivot.run.remote_view import RemoteAccess

log = logging.getLogger(__name__)  # the CLI shows warnings; see pivot.cli.main
RUN_KEY_VERSION = 2
SKIP, RESTORE, RUN, PENDING = "skip", "restore", "run", "pending"


class Decision:
    """What to do with one stage, and the facts that led there."""

    __slots__ = (
        "absent_deps",
        "action",
        "deps",
        "fetched_record",
        "fingerprint",
        "kept",
        "lock",
        "materialize",
        "not_local",
        "outs",
        "reasons",
        "run_key",
        "stage",
    )

    def __init__(
        self,
        stage: StageSpec,
        action: str,
        reasons: list[str] | None = None,
        run_key: str | None = None,
        fingerprint: dict[str, str] | None = None,
        deps: dict[str, str] | None = None,
        lock: Lock | None = None,
        absent_deps: list[str] | None = None,
    ) -> None:
        self.stage = stage
        self.action = action
        self.reasons = [] if reasons is None else reasons
        self.run_key = run_key
        self.fingerprint = {} if fingerprint is None else fingerprint
        self.deps = {} if deps is None else deps
        self.outs: dict[str, dict[str, Any]] = {}
        self.lock = lock
        self.materialize = True
        # For a restore left unplaced: where its outputs are ("in cache", ...).
        self.kept = ""
        self.fetched_record: bytes | None = None  # the run record read from the remote
        self.absent_deps = [] if absent_deps is None else absent_deps  # nowhere, not tracked
        # Deps inside a tracked folder whose manifest is not in the local cache (and was
        # not fetched): the lock's hash stood in, so "up to date" is a guess. (dep, folder)
        self.not_local: list[tuple[str, str]] = []

    @property
    def kept_up_to_date(self) -> bool:
        """Up to date with its outputs deliberately left in a cache: nothing in scope
        reads them, and the lock already records them."""
        return self.action == RESTORE and not self.materialize and self.matches_lock

    @property
    def matches_lock(self) -> bool:
        """The lock is this run's: same run key, and exactly the declared outputs."""
        return (
            self.lock is not None
            and self.lock.run_key == self.run_key
            and declares(self.stage, self.lock.outs)
        )

    def new_lock(
        self, outs: dict[str, dict[str, Any]], metrics: dict[str, dict[str, Any]] | None = None
    ) -> Lock:
        assert self.run_key is not None
        return Lock(
            stage_id=self.stage.id,
            run_key=self.run_key,
            fingerprint=self.fingerprint,
            params=lock_params(self.stage),
            deps=self.deps,
            outs=outs,
            metrics=metrics or {},
        )


def lock_params(stage: StageSpec) -> dict[str, Any]:
    """The stage's params as the lock file holds them: JSON, a value JSON lacks (a function,
    a set) as its canonical form, which is the same in every process."""
    params = stage.params_dict()
    if not params:
        return {}
    return json.loads(json.dumps(params, default=lambda v: json.loads(canonical_json(v))))


def run_key(stage: StageSpec, code_digest: str, deps: dict[str, str]) -> str:
    """Hash of everything that decides a stage's result.

    Params and loaders enter through `canonical_json`: the same in every process and on
    every machine (no set order, no memory address).
    """
    return run_key_of(run_key_body(stage, code_digest), deps)


def run_key_of(body: dict[str, Any], deps: dict[str, str]) -> str:
    """The run key of a stage whose `run_key_body` is `body`, with deps of these hashes
    (a cluster worker computes it for a stage submitted before its upstreams finished)."""
    text = _key_text({**body, "deps": sorted(deps.items())})
    return blake3.blake3(text.encode()).hexdigest()


def run_key_body(stage: StageSpec, code_digest: str) -> dict[str, Any]:
    """What a stage's run key hashes besides its deps' hashes (JSON data)."""
    try:
        values = stage.params_dict()
        params = canonical_json(values) if values else _no_params()
        dep_loaders = sorted((d.path, loader_text(d.loader)) for d in stage.deps)
        out_loaders = sorted((o.path, loader_text(o.loader)) for o in stage.outs)
    except TypeError as exc:
        raise DefinitionError(
            f"Stage {stage.id} ({stage.source}): its params and loaders must be plain data "
            f"(numbers, strings, containers, dataclasses, enums, paths, functions or objects "
            f"of your own classes) to be part of its cache key, but {exc}. Replace that value "
            f"with a setting it can be rebuilt from.",
            path=stage.source,
            stage=stage.id,
        ) from exc
    body: dict[str, Any] = {
        "v": RUN_KEY_VERSION,
        "code": code_digest,
        "params": params,
        "dep_loaders": dep_loaders,
        "outs": out_loaders,
    }
    fan_in = [(d.key, d.group, d.path) for d in stage.deps if d.group]
    if fan_in:  # which argument gets which paths, in which order (absent otherwise)
        body["fan_in"] = fan_in
    return body


# What `json.dumps(body, sort_keys=True, separators=(",", ":"))` uses, made once.
_KEY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _key_text(body: dict[str, Any]) -> str:
    """`_KEY_JSON.encode(body)`: the C encoder it makes per call, made once (no circular
    reference check: a run key's body holds strings, numbers and lists of them)."""
    return "".join(_C_KEY_JSON(body, 0)) if _C_KEY_JSON is not None else _KEY_JSON.encode(body)


_C_KEY_JSON = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _KEY_JSON.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        True,
        False,
        True,
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


@functools.cache
def _no_params() -> str:
    """`canonical_json({})`: the params of most stages."""
    return canonical_json({})


class Planner:
    """Computes decisions stage by stage, in topological order."""

    def __init__(
        self,
        ws: Workspace,
        graph: Graph,
        force: set[str] | None = None,
        remote: RemoteAccess | None = None,
        locks: dict[str, Lock] | None = None,
    ) -> None:
        """`locks`: lock files the command has just read (this planner takes each one it
        uses out of the dict, so it owns them; it reads the others)."""
        self.ws = ws
        self.graph = graph
        self.force = force or set()
        self.remote = remote
        self.known: dict[str, dict[str, Any]] = {}
        self._fingerprints: dict[str, dict[str, str]] = {}
        self._locks: dict[str, Lock | None] = {}
        self._given = locks if locks is not None else {}
        self.tracked = tracked.load_all(ws.project)
        self._absent: dict[str, list[str]] = {}
        self._guessed: dict[str, list[tuple[str, str]]] = {}

    def settle(self, stage_id: str, outs: dict[str, dict[str, Any]]) -> None:
        """Record the outputs a stage now has, so that its downstreams can be decided."""
        self.known.update(outs)

    def fingerprint_of(self, stage: StageSpec) -> dict[str, str]:
        if stage.id not in self._fingerprints:
            self._fingerprints[stage.id] = fingerprint(
                stage.func, self.ws.project.root, stage.params
            )
        return self._fingerprints[stage.id]

    def prepare(self, stage: StageSpec) -> bool:
        """Compute the stage's code fingerprint ahead of its decision (the scheduler does
        this while its upstreams run); an error is left for `decide` to raise. Whether
        there was one to compute."""
        if stage.id in self._fingerprints:
            return False
        with contextlib.suppress(Exception):
            self.fingerprint_of(stage)
        return True

    def dep_hashes(self, stage: StageSpec, upstream: dict[str, str]) -> dict[str, str] | None:
        """Hashes of the stage's deps, or None while an upstream's output is not in place.

        A dep absent from the workspace is resolved through its tracked-data record; one
        that is neither there nor tracked (nor produced) takes the hash its lock recorded,
        and raises `AbsentDeps` if the lock has none. So does one that a tracked record in
        hand lacks (a folder tracked again without it): it is known to be gone."""
        links = self.graph.upstream[stage.id]
        hashes: dict[str, str] = {}
        absent: list[str] = []
        guessed: list[tuple[str, str]] = []
        for dep in stage.deps:
            if dep.path in self.known:
                hashes[dep.path] = self.known[dep.path]["hash"]
                continue
            if dep.path in links and upstream.get(links[dep.path], SKIP) != SKIP:
                return None
            found = self.ws.hasher.hash_path(dep.path)
            digest = found.hash if found is not None else self.tracked_hash(dep.path)
            if digest is None and dep.path not in links:
                record = tracked.covering(self.tracked, dep.path)
                lock = None if self._record_lacks(record) else self.lock_of(stage.id)
                digest = lock.deps.get(dep.path) if lock is not None else None
                if digest is None or record is None:
                    absent.append(dep.path)
                elif record.kind == DIR and not self.ws.cache.has(record.hash):
                    guessed.append((dep.path, record.path))  # the lock's hash stands in
            if digest is None:
                raise AbsentDeps(absent or [dep.path])
            hashes[dep.path] = digest
        self._absent[stage.id] = absent
        self._guessed[stage.id] = guessed
        return hashes

    def _record_lacks(self, record: tracked.Tracked | None) -> bool:
        """Whether `record`, covering a dep that `tracked_hash` did not find, is known to
        lack it: a tracked file (the dep lies below it) or a folder whose manifest is local."""
        if record is None:
            return False
        return record.kind != DIR or self.ws.cache.has(record.hash)

    def tracked_hash(self, path: str) -> str | None:
        """The hash `path` has by its tracked-data record (a path inside a tracked folder:
        by the folder's manifest, when that is in the local cache)."""
        record = tracked.covering(self.tracked, path)
        if record is None:
            return None
        if record.path == path:
            return record.hash
        if record.kind != DIR or not self._has_manifest(record.hash):
            return None
        inner = path[len(record.path) + 1 :]
        entries = self.ws.cache.tree(record.hash)
        for entry in entries:
            if entry.relpath == inner:
                return entry.hash
        below = [
            TreeEntry(e.relpath[len(inner) + 1 :], e.hash, e.size, e.mode)
            for e in entries
            if e.relpath.startswith(inner + "/")
        ]
        return hash_bytes(encode_tree(below)) if below else None

    def _has_manifest(self, digest: str) -> bool:
        """Whether the tracked folder manifest `digest` is in the local cache, fetched
        from the remote when it is not and the command may contact the remote (`status`
        without `--remote` may not: the lock's recorded hash then stands in)."""
        if self.ws.cache.has(digest):
            return True
        if self.remote is None or not self.remote.may_contact:
            return False
        try:
            self.remote.fetch([(digest, FILE)])
        except PivotError as exc:
            log.warning(f"{exc} The recorded hash of the deps inside that folder stands in.")
            return False
        return self.ws.cache.has(digest)

    def decide(self, stage: StageSpec, upstream_actions: dict[str, str]) -> Decision:
        """Decide one stage; `upstream_actions` are the decisions of its upstreams."""
        changed_ups = [u for u, a in upstream_actions.items() if a in (RUN, PENDING)]
        lock = self.lock_of(stage.id)
        try:
            deps = None if changed_ups else self.dep_hashes(stage, upstream_actions)
        except AbsentDeps as exc:
            why = [self._missing_reason(p) for p in exc.paths]
            return Decision(stage, RUN, why, lock=lock, absent_deps=exc.paths)
        if deps is None:
            why = [f"upstream {u} will run" for u in changed_ups] or ["upstream being restored"]
            return Decision(stage, PENDING, why, lock=lock)
        parts = self.fingerprint_of(stage)
        key = run_key(stage, fingerprint_digest(parts), deps)
        decision = Decision(stage, RUN, [], key, parts, deps, lock=lock)
        decision.absent_deps = self._absent.pop(stage.id, [])
        decision.not_local = self._guessed.pop(stage.id, [])
        if stage.id in self.force:
            decision.reasons = ["forced"]
            return decision
        decision = self._decide_with_lock(decision)
        if decision.absent_deps:
            if decision.action == RUN:
                decision.reasons[:0] = [
                    f"dep {p} is missing (not tracked, no stage produces it)"
                    for p in decision.absent_deps
                ]
            else:
                decision.reasons[:0] = [
                    f"dep {p} missing, outputs restorable" for p in decision.absent_deps
                ]
        return decision

    def _missing_reason(self, path: str) -> str:
        """Why the absent dep `path` is missing, for a stage that must execute."""
        record = tracked.covering(self.tracked, path)
        if record is None:
            return f"dep {path} is missing (not tracked, no stage produces it)"
        kind = "folder" if record.kind == DIR else "file"
        return f"dep {path} is missing (the tracked {kind} {record.path} does not hold it)"

    def _decide_with_lock(self, decision: Decision) -> Decision:
        """Skip, restore or run `decision`'s stage by its lock and the run records."""
        stage, lock, key, parts, deps = (
            decision.stage,
            decision.lock,
            decision.run_key,
            decision.fingerprint,
            decision.deps,
        )
        assert key is not None
        if decision.matches_lock:
            assert lock is not None
            damaged = self._damaged_outputs(lock.outs)
            if not damaged:
                decision.action, decision.outs = SKIP, lock.outs
                return decision
            decision.reasons = [f"output {p} {state}" for p, state in damaged]
            self._restore_if_available(decision, self.ws.runs.get(key) or lock.outs)
            return decision
        decision.reasons = explain(stage, lock, parts, deps)
        record, where = self._run_record(key, decision)
        if record is not None:
            decision.reasons.append(f"an earlier run with these inputs is {where}")
            self._restore_if_available(decision, record)
        return decision

    def lock_of(self, stage_id: str) -> Lock | None:
        """The stage's lock file, read once; an unusable one is reported and ignored."""
        if stage_id not in self._locks:
            given = self._given.pop(stage_id, None)
            if given is not None:
                self._locks[stage_id] = given
                return given
            try:
                self._locks[stage_id] = read_lock(self.ws.project.stages_dir, stage_id)
            except (CorruptFile, UnsafePath) as exc:
                log.warning(f"{exc} Treating stage {stage_id} as stale; it will run again.")
                self._locks[stage_id] = None
        return self._locks[stage_id]

    def _run_record(
        self, key: str, decision: Decision
    ) -> tuple[dict[str, dict[str, Any]] | None, str]:
        """The outputs an earlier run with run key `key` recorded, and where that record
        is; one read from the remote is kept on `decision` (the scheduler stores it once
        the restore happened: planning writes nothing)."""
        record = self.ws.runs.get(key)
        if record is not None or self.remote is None or not self.remote.contacted:
            return record, "in the local cache"
        data = self.remote.run_record(key)
        if data is None:
            return None, ""
        where = f"on the remote {self.remote.display}"
        outs = decode_record(data, f"run record {key[:12]} from {where}")
        decision.fetched_record = data
        return outs, where

    def _restore_if_available(self, decision: Decision, outs: dict[str, dict[str, Any]]) -> None:
        """Restore when every output is in the local cache or on the remote, else run.
        Only the stage's declared outputs are ever restored: a lock or run record that
        names other paths (it was crafted, or the run key collided) is not used."""
        if not declares(decision.stage, outs):
            decision.reasons.append("its recorded outputs are not the ones it declares")
            return
        try:
            available = all(self.available(o["hash"], o["kind"]) for o in outs.values())
        except (CorruptFile, UnsafePath) as exc:  # a tree manifest in the cache that is refused
            log.warning(f"{exc} Running stage {decision.stage.id} instead of restoring it.")
            available = False
        if available:
            decision.action, decision.outs = RESTORE, outs
        else:
            decision.reasons.append("its outputs are in no cache that can be reached")

    def available(self, digest: str, kind: str) -> bool:
        """In the local cache, or on the remote (assumed until the remote is contacted:
        the lock or record that names it was pushed with it). A local object an output
        shares through a link and that an edit in place damaged is set aside
        (`cache.linked`), never restored from."""
        if not self.ws.cache.missing(digest, kind):
            bad = damaged_objects(self.ws.state, self.ws.cache, digest, kind)
            for blob in bad:
                self.ws.cache.damaged(blob)
            if not bad:
                return True
        if self.remote is None:
            return False
        return not self.remote.contacted or self.remote.has_output(digest)

    def _damaged_outputs(self, outs: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
        damaged = []
        for path, recorded in outs.items():
            found = self.ws.hasher.hash_path(path)
            if found is None:
                damaged.append((path, "is missing"))
            elif found.hash != recorded["hash"]:
                damaged.append((path, "was modified"))
        return damaged


class AbsentDeps(Exception):
    """Deps of a stage that are absent, untracked and unknown to its lock."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(", ".join(paths))
        self.paths = paths


def explain(
    stage: StageSpec, lock: Lock | None, parts: dict[str, str], deps: dict[str, str]
) -> list[str]:
    """Human reasons why the stage's run key differs from its lock."""
    if lock is None:
        return ["never ran (no lock file)"]
    reasons = []
    for name in sorted(set(parts) | set(lock.fingerprint)):
        if parts.get(name) != lock.fingerprint.get(name):
            reasons.append(f"code changed: {name}")
    # The lock holds params as JSON: compare canonical forms of JSON-normalised values.
    params, before = flatten_params(lock_params(stage)), flatten_params(lock.params)
    for name in sorted(set(params) | set(before)):
        if name not in before:
            reasons.append(f"param added: {name} = {_shown(params[name])}")
        elif name not in params:
            reasons.append(f"param removed: {name} (was {_shown(before[name])})")
        elif canonical_json(params[name]) != canonical_json(before[name]):
            reasons.append(f"param changed: {name} {_shown(before[name])} → {_shown(params[name])}")
    for path in sorted(set(deps) | set(lock.deps)):
        if path not in lock.deps:
            reasons.append(f"new dep: {path}")
        elif path not in deps:
            reasons.append(f"dep removed: {path}")
        elif deps[path] != lock.deps[path]:
            reasons.append(f"dep changed: {path}")
    if not declares(stage, lock.outs):
        reasons.append("its declared outputs differ from its lock file's")
    return reasons or ["loaders or format version changed"]


def _shown(value: Any) -> str:
    """A param value in a reason: compact JSON, long ones shortened."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 40 else text[:37] + "..."
