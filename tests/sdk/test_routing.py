"""The SDK's routing rules in a cluster, without a server: which queue a request acts on,
the route table, and how far a request follows a queue that moves."""

import pytest
from overhop_client.errors import QueueMovedError, error_from_wire
from overhop_client.messages import MessageType
from overhop_client.routing import (
    FIRST_WAIT_S,
    FOLLOW_DEADLINE_S,
    JOB_FIELD,
    MAX_HOPS,
    MAX_WAIT_S,
    QUEUE_FIELD,
    SCHEDULE_FIELD,
    SUBSCRIPTION_FIELD,
    FollowBudget,
    RouteTable,
    queue_of,
    queue_of_job,
)

# Answered by any broker (PROTOCOL.md section 12), or naming only a subscription.
ANY_BROKER = {
    MessageType.HELLO, MessageType.AUTH, MessageType.REGISTER, MessageType.PING,
    MessageType.GOODBYE, MessageType.ROUTES, MessageType.STATUS, MessageType.LSQUEUE,
    MessageType.LSSCHEDULE, MessageType.USERADD, MessageType.USERLIST, MessageType.USERRM,
    MessageType.USERPERMIT, MessageType.WORKERCTL, MessageType.ADDQUEUE}


def test_every_request_has_one_routing_rule() -> None:
    requests = {t for t in MessageType if t < 100}
    tables = [QUEUE_FIELD, JOB_FIELD, SCHEDULE_FIELD, SUBSCRIPTION_FIELD, ANY_BROKER]
    assert sum(len(table) for table in tables) == len(requests)
    assert set().union(*tables) == requests


@pytest.mark.parametrize(("message_type", "payload", "queue"), [
    (MessageType.ENQUEUE, {"q": "emails", "job_payload": 1}, "emails"),
    (MessageType.SUBSCRIBE, {"q": "emails", "credits": 4}, "emails"),
    (MessageType.COMPLETE, {"jid": "billing:eu:0190", "did": "d"}, "billing:eu"),
    (MessageType.WATCH, {"jid": "emails:0190"}, "emails"),
    (MessageType.PAUSESCHEDULE, {"name": "nightly"}, "reports"),
    (MessageType.RMSCHEDULE, {"name": "unknown"}, None),
    (MessageType.LSQUEUE, {}, None),
    (MessageType.ADDQUEUE, {"name": "emails"}, None),
    (MessageType.ENQUEUE, {"q": 7}, None),
])
def test_queue_of(message_type: MessageType, payload: dict[str, object],
                  queue: str | None) -> None:
    assert queue_of(message_type, payload, {"nightly": "reports"}) == queue


def test_queue_of_job_is_the_part_before_the_last_colon() -> None:
    assert queue_of_job("a:b:c") == "a:b"
    assert queue_of_job("nocolon") == ""


def test_the_route_table_learns_from_routes_and_moves() -> None:
    table = RouteTable()
    table.learn_routes({"node": "n1", "nodes": {"n1": "h1:1", "n2": "h2:2"},
                        "queues": {"a": "h1:1", "b": "h2:2", "c": None}})
    assert (table.owner("a"), table.owner("b"), table.owner("c"), table.owner("d")) == (
        "h1:1", "h2:2", None, None)
    assert table.node_address == "h1:1"
    table.learn("a", "h2:2")
    assert table.owner("a") == "h2:2"
    table.forget(["h2:2"])
    assert (table.owner("a"), table.owner("b")) == (None, None)
    assert table.nodes == {"n1": "h1:1"}


def test_routes_outside_a_cluster_name_no_node() -> None:
    table = RouteTable()
    table.learn_routes({"node": None, "nodes": {}, "queues": {}})
    assert table.node_address is None and table.nodes == {}


def test_the_follow_budget_bounds_hops_and_waits() -> None:
    budget = FollowBudget(now=0.0)
    assert all(budget.hop(0.0) for _ in range(MAX_HOPS))
    assert not budget.hop(0.0)
    waits = FollowBudget(now=0.0)
    assert [waits.wait(0.0) for _ in range(7)] == [
        FIRST_WAIT_S * 2 ** n for n in range(5)] + [MAX_WAIT_S, MAX_WAIT_S]
    assert waits.wait(FOLLOW_DEADLINE_S - 0.5) is None
    assert not FollowBudget(now=0.0).hop(FOLLOW_DEADLINE_S)


def test_queue_moved_carries_its_queue_and_owner() -> None:
    moved = error_from_wire({"code": "QUEUE_MOVED", "msg": "owned by another broker",
                             "details": {"q": "emails", "owner": "h2:2"}})
    assert isinstance(moved, QueueMovedError)
    assert (moved.queue, moved.owner) == ("emails", "h2:2")
    nobody = error_from_wire({"code": "QUEUE_MOVED", "details": {"q": "emails",
                                                                  "owner": None}})
    assert isinstance(nobody, QueueMovedError) and nobody.owner is None
