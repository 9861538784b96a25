"""`overhop users add|list|remove|permit`: the server's users, live (no restart).

    overhop users add NAME [--permit VERB[:PATTERN] ...] [--password-stdin] [--iterations N]
    overhop users list
    overhop users remove NAME
    overhop users permit NAME VERB[:PATTERN] ... [--revoke | --only]

They need the `admin` verb on `*` (or a server without users yet: the first user is added
over an unauthenticated loopback connection, see docs/security.md). `add` asks for the
password twice on the terminal, or reads one line from stdin with `--password-stdin`;
the SDK derives the SCRAM keys here, so the password is never sent.
"""

import sys

import click
from overhop_client import AsyncClient, UserInfo
from overhop_client.auth import DEFAULT_ITERATIONS, MAX_ITERATIONS, MIN_ITERATIONS

from overhop.cli.exits import USAGE_EXIT, fail
from overhop.cli.render import emit_json, table
from overhop.cli.session import call, common

PERMISSION_HELP = ("VERB[:PATTERN]: produce, consume, read, manage or admin, on queues "
                   "matching the glob PATTERN (default *)")


@click.group("users")
def users_group() -> None:
    """Add, list, remove users and set what they may do."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    if not password:
        fail("the password must not be empty", USAGE_EXIT)
    return password


@users_group.command("add")
@click.argument("name")
@click.option("--permit", "permissions", multiple=True, metavar="VERB[:PATTERN]",
              help=f"A permission ({PERMISSION_HELP}); repeat for more.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--iterations", type=click.IntRange(MIN_ITERATIONS, MAX_ITERATIONS),
              default=DEFAULT_ITERATIONS, show_default=True,
              help="PBKDF2 iterations for the stored keys (each login costs the client this).")
@common
def users_add(name: str, permissions: tuple[str, ...], password_stdin: bool,
              iterations: int, url: str, as_json: bool) -> None:
    """Add the user NAME."""
    password = _password(password_stdin)
    user = call(url, lambda client: client.add_user(name, password, permissions,
                                                    iterations=iterations))
    if as_json:
        emit_json(user)
    else:
        click.echo(f"user {name} added ({', '.join(user['permissions']) or 'no permissions'})")


@users_group.command("list")
@common
def users_list(url: str, as_json: bool) -> None:
    """List the users and their permissions."""
    users = call(url, lambda client: client.users())
    if as_json:
        emit_json({"users": users})
    else:
        click.echo(table(["NAME", "PERMISSIONS", "CREATED"],
                         [[u["name"], " ".join(u["permissions"]) or "-", u["created_at"]]
                          for u in users]))


@users_group.command("remove")
@click.argument("name")
@common
def users_remove(name: str, url: str, as_json: bool) -> None:
    """Remove the user NAME; its connections are closed."""
    call(url, lambda client: client.remove_user(name))
    if as_json:
        emit_json({"name": name, "removed": True})
    else:
        click.echo(f"user {name} removed")


@users_group.command("permit")
@click.argument("name")
@click.argument("permissions", nargs=-1, metavar="VERB[:PATTERN]...")
@click.option("--revoke", is_flag=True, help="Take these permissions away instead.")
@click.option("--only", is_flag=True, help="Replace all the user's permissions with these.")
@common
def users_permit(name: str, permissions: tuple[str, ...], revoke: bool, only: bool,
                 url: str, as_json: bool) -> None:
    """Give the user NAME these permissions (in effect at its next request)."""
    if revoke and only:
        fail("users permit: --revoke and --only do not go together", USAGE_EXIT)
    if not permissions and not only:
        fail("users permit: name at least one permission (see --help)", USAGE_EXIT)
    wanted = {p if ":" in p else f"{p}:*" for p in permissions}

    async def change(client: AsyncClient) -> UserInfo:
        current = next((u["permissions"] for u in await client.users() if u["name"] == name),
                       None)
        if current is None or only:
            chosen = wanted  # an unknown user: the server answers USER_NOT_FOUND
        elif revoke:
            chosen = set(current) - wanted
        else:
            chosen = set(current) | wanted
        return await client.set_permissions(name, sorted(chosen))

    user = call(url, change)
    if as_json:
        emit_json(user)
    else:
        click.echo(f"user {name}: {' '.join(user['permissions']) or 'no permissions'}")
