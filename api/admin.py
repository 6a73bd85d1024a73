"""`python -m api.admin <command>`: accounts from the command line (the machine's operator, not the API).

- `ensure-admin`: what `scripts/run.sh` runs before the backend. Creates ADMIN_USERNAME/ADMIN_PASSWORD when set;
  when no active admin exists and those are not set, creates `admin` with a random password and prints it once.
- `create-admin --username NAME [--password-stdin]`: a new admin (random password printed unless given on stdin).
- `reset-password --username NAME [--password-stdin]`: a new password (random unless given), ends their sessions.
- `list-users`: username, role and state of every account.
Exit status 0 on success, 2 with a one-line `error:` message otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from api.auth import AuthService, ConfigurationError, generate_password
from api.permissions import Role
from settings import Settings, get_settings
from storage import StorageError, UsernameTakenError, init_storage

DEFAULT_ADMIN_USERNAME = "admin"


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated): read one line from stdin, or make a random one."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return generate_password(), True


def _announce(username: str, password: str, generated: bool) -> str:
    if not generated:
        return f"Account {username!r} is ready."
    return (
        f"Account {username!r} password: {password}\n"
        "It is shown only this once: store it safely, or change it after logging in (POST /v1/auth/password)."
    )


def ensure_admin(auth: AuthService) -> str:
    """The settings admin is already handled by `AuthService.start`; otherwise create one if there is none."""
    if auth.users.count_active(Role.ADMIN.value) > 0:
        return "An active admin account exists."
    username = DEFAULT_ADMIN_USERNAME
    if auth.users.find_credentials(username) is not None:  # taken by a non-admin or deactivated account
        username = f"{DEFAULT_ADMIN_USERNAME}-{generate_password()[:6].lower()}"
    password = generate_password()
    auth.create_user(username, password, Role.ADMIN)
    return "Created the first admin. " + _announce(username, password, generated=True)


def create_admin(auth: AuthService, username: str, from_stdin: bool) -> str:
    password, generated = _password(from_stdin)
    auth.create_user(username, password, Role.ADMIN)
    return _announce(username, password, generated)


def reset_password(auth: AuthService, username: str, from_stdin: bool) -> str:
    found = auth.users.find_credentials(username)
    if found is None:
        raise LookupError(f"No account is named {username!r}.")
    password, generated = _password(from_stdin)
    auth.update_account(found[0].id, password=password)
    return _announce(found[0].username, password, generated)


def list_users(auth: AuthService) -> str:
    rows = [f"{u.username}\t{u.role}\t{'active' if u.active else 'inactive'}" for u in auth.users.list_users()]
    return "\n".join(["username\trole\tstate", *rows])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m api.admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure-admin", help="make sure an admin exists (prints a new random password once)")
    for name, text in (("create-admin", "create an admin account"), ("reset-password", "set a new password")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--username", required=True)
        command.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    commands.add_parser("list-users", help="list accounts")
    return parser


def run(args: argparse.Namespace, settings: Settings) -> str:
    storage = init_storage(settings)
    try:
        auth = AuthService.start(settings, storage.database)
        if args.command == "ensure-admin":
            return ensure_admin(auth)
        if args.command == "create-admin":
            return create_admin(auth, args.username, args.password_stdin)
        if args.command == "reset-password":
            return reset_password(auth, args.username, args.password_stdin)
        return list_users(auth)
    finally:
        storage.close()


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        message = run(args, settings or get_settings())
    except UsernameTakenError:
        print("error: an account with this username exists (use reset-password).", file=sys.stderr)
        return 2
    except (ConfigurationError, StorageError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
