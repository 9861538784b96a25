"""How queues are spread over the live brokers (overhop/cluster/assignment.py)."""

from hypothesis import given
from hypothesis import strategies as st

from overhop.cluster.assignment import spread

queue_names = st.sets(st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True), max_size=60)
node_ids = st.lists(st.from_regex(r"n[0-9]{1,3}", fullmatch=True), min_size=1, max_size=6,
                    unique=True)


@given(queue_names, node_ids)
def test_every_queue_goes_to_one_live_broker_and_loads_differ_by_one_at_most(
        names: set[str], nodes: list[str]) -> None:
    chosen = spread(names, nodes)
    assert set(chosen) == names
    assert set(chosen.values()) <= set(nodes)
    loads = [list(chosen.values()).count(node) for node in nodes]
    assert max(loads) - min(loads) <= 1


@given(queue_names, node_ids)
def test_every_broker_computes_the_same_spread_whatever_order_it_reads_in(
        names: set[str], nodes: list[str]) -> None:
    assert spread(sorted(names), nodes) == spread(sorted(names, reverse=True), nodes[::-1])


def test_a_broker_joining_moves_about_its_share_not_everything() -> None:
    names = {f"queue-{i}" for i in range(300)}
    before = spread(names, ["a", "b"])
    after = spread(names, ["a", "b", "c"])
    moved = sum(before[name] != after[name] for name in names)
    assert 100 <= moved <= 150  # c's share is 100; few others shuffle between a and b


def test_no_broker_no_owner() -> None:
    assert spread({"a", "b"}, []) == {}
