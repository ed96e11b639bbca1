"""The scheduler's ready queue: stages come out in topological order once every upstream
settled, or as soon as one failed; stages put back come out first again."""

from __future__ import annotations

from pivot.discover.graph import Graph
from pivot.run.ready import ReadyQueue


def _graph() -> Graph:
    # a -> c <- b, c -> d; e alone; c reads two paths of a (one edge counted once)
    upstream = {"a": {}, "b": {}, "c": {"x": "a", "y": "a", "z": "b"}, "d": {"w": "c"}, "e": {}}
    return Graph(stages=dict.fromkeys(upstream), upstream=upstream)  # type: ignore[arg-type]


def _drain(queue: ReadyQueue) -> list[str]:
    popped = []
    while (sid := queue.pop()) is not None:
        popped.append(sid)
    return popped


def test_stages_come_out_once_their_upstreams_settled_in_topological_order():
    graph = _graph()
    queue = ReadyQueue(graph, graph.order(), graph.order(), set())
    assert _drain(queue) == ["a", "b", "e"]
    queue.settled("a", failed=False)
    assert _drain(queue) == []  # c still waits for b
    queue.settled("b", failed=False)
    assert _drain(queue) == ["c"]
    queue.settled("c", failed=False)
    assert _drain(queue) == ["d"]


def test_a_failed_upstream_releases_its_downstream_at_once():
    graph = _graph()
    queue = ReadyQueue(graph, graph.order(), graph.order(), set())
    assert _drain(queue) == ["a", "b", "e"]
    queue.settled("a", failed=True)
    assert _drain(queue) == ["c"]  # to be blocked, though b has not settled
    queue.settled("c", failed=True)
    queue.settled("b", failed=False)  # c is no longer waiting: not handed out again
    assert _drain(queue) == ["d"]


def test_stages_put_back_come_first_and_settled_ones_are_skipped():
    graph = _graph()
    order = graph.order()
    queue = ReadyQueue(graph, order, [s for s in order if s != "a"], {"a"})
    assert _drain(queue) == ["b", "e"]
    queue.put_back(["e", "b"])
    assert queue.pop() == "b"
    queue.settled("b", failed=False)
    assert _drain(queue) == ["e", "c"]  # by rank: a, b, e, c, d
