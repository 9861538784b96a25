"""The `overhop` command line, one module per command group.

`main` is the console-script entry point (`overhop = "overhop.cli:main"` in pyproject.toml,
and `python -m overhop`); `cli` is the click group, which other code may extend.

    group.py           the `overhop` group, `serve`, `config`, `--self-debug`, and the lazy
                       loading of the commands below
    queues.py          `overhop queues` and `overhop queue ...`
    queue_settings.py  the queue-setting options of `queue add` and `queue set`
    enqueue.py         `overhop enqueue`
    jobs.py            `overhop job ...` and `overhop jobs`
    status.py          `overhop status`
    worker.py          `overhop worker`
    users.py           `overhop users add|list|remove|permit`
    session.py         one connection to a server per command, `--url`, `--json`
    render.py          tables, `key  value` fields, JSON, durations
    exits.py           exit statuses and the one-line failure

Importing this package loads only `group` and `exits`: the other modules use the Python
SDK (`overhop_client`) and are imported when one of their commands is asked for, so
`overhop serve` and `overhop config` work without the SDK.
"""

from overhop.cli.group import cli, main

__all__ = ["cli", "main"]
