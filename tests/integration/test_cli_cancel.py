"""`overhop cancel`, `overhop job cancel` and `overhop bulk` against a real server."""

from overhop_client import Client

from tests.integration.test_cli_admin import assert_one_line_error, run, run_json, url

__all__ = ["url"]  # the fixture, shared with the other CLI tests


def test_cancel_and_bulk_commands(url: str) -> None:
    with Client(url) as client:
        client.add_queue("emails", max_attempts=1)
        jids = [client.enqueue("emails", n) for n in range(4)]

    result = run(url, "cancel", jids[0], "--reason", "typo")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"job {jids[0]} cancelled\n"
    assert run_json(url, "job", "cancel", jids[1]) == {"jid": jids[1], "status": "cancelled"}
    shown = run(url, "job", jids[0])
    assert "cancel reason" in shown.stdout and "typo" in shown.stdout

    result = run(url, "bulk", "emails", "--status", "waiting", "--action", "cancel",
                 "--reason", "drained")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 waiting jobs of emails cancelled\n"
    listed = run(url, "jobs", "emails", "--status", "cancelled")
    assert all(jid in listed.stdout for jid in jids)
    assert "CANCELLED" in run(url, "queues").stdout
    assert run_json(url, "bulk", "emails", "--status", "cancelled", "--action", "remove") == {
        "q": "emails", "status": "cancelled", "action": "remove", "count": 4}
    with Client(url) as client:
        assert client.stats("emails").counts.total == 0

    assert_one_line_error(run(url, "bulk", "emails", "--status", "waiting", "--action",
                              "retry"), 2, "--action retry takes --status failed")
    assert_one_line_error(run(url, "bulk", "emails", "--status", "failed", "--action",
                              "retry", "--reason", "x"), 2, "--reason goes with")
    assert_one_line_error(run(url, "bulk", "nope", "--status", "failed", "--action",
                              "retry"), 1, "nope")
    assert_one_line_error(run(url, "cancel", "emails:0190a0b0-0000-7000-8000-000000000000"),
                          1, "does not exist")
