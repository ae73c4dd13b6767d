"""
C{resmon-users FILE COMMAND ...}: writes the users file of C{--users}
(atomically, mode 0600). Passwords are prompted for, twice, on the
terminal; when standard input is not a terminal they are read from it as
two lines (the password, then again). Never on the command line.
"""

import argparse
import contextlib
import fcntl
import getpass
import os
import sys
import time

from resmon.auth import passwords
from resmon.auth.principal import ROLES, VIEWER
from resmon.auth.usersfile import (
    Token, User, Users, UsersFileError, checkName, checkPattern, loadUsers, newUserId, writeUsers)


class CommandError(Exception):
    pass


def _list(text):
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _readPassword(stdin, stderr):
    if stdin.isatty():
        first = getpass.getpass("Password: ", stream=stderr)
        second = getpass.getpass("Password again: ", stream=stderr)
    else:
        first, second = stdin.readline().rstrip("\r\n"), stdin.readline().rstrip("\r\n")
    if first != second:
        raise CommandError("the two passwords differ; nothing changed")
    try:
        passwords.checkPasswordChoice(first)
    except ValueError as e:
        raise CommandError(f"{e}; nothing changed")
    return passwords.hashPassword(first)


def _load(path, mustExist=True):
    if not os.path.exists(path):
        if mustExist:
            raise CommandError(f"{path} does not exist (create it with 'add')")
        return Users()
    try:
        return loadUsers(path)
    except UsersFileError as e:
        raise CommandError(str(e))


def _user(users, name):
    user = users.get(name)
    if user is None:
        raise CommandError(f"no user {name!r}")
    return user


def _checkSettings(args):
    try:
        for group in args.groups or ():
            checkName(group, "group")
        for pattern in args.hosts or ():
            checkPattern(pattern)
    except (ValueError, UsersFileError) as e:
        raise CommandError(str(e))


def _describe(user):
    hosts = "every host" if user.role == "admin" else (", ".join(user.hosts) or "no host")
    tokens = ", ".join(f"{t.id}" + (f" ({t.label})" if t.label else "")
                       for t in sorted(user.tokens.values(), key=lambda t: t.id)) or "none"
    login = "" if user.password else " (no password: tokens only)"
    return (f"{user.name}: {user.role}{login}; hosts: {hosts}; groups: "
            f"{', '.join(user.groups) or 'none'}; tokens: {tokens}")


@contextlib.contextmanager
def _locked(path):
    """
    Hold an exclusive lock on the file's directory (no lock file left
    behind), so that two resmon-users at once do not lose a change.
    """
    descriptor = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def run(args, stdin, stdout, stderr):
    with _locked(args.file):
        _run(args, stdin, stdout, stderr)


def _run(args, stdin, stdout, stderr):
    path = args.file
    if args.command == "list":
        for user in sorted(_load(path).users.values(), key=lambda u: u.name):
            print(_describe(user), file=stdout)
        return
    users = _load(path, mustExist=args.command != "add")
    # A file written before users had ids has none: the ids filled in for its
    # users are marked predates_ids (they may own hooks bound to no id). A
    # user without one in a file that has ids was added by other means, since.
    olderFile = all(user.id is None for user in users.users.values())
    if args.command == "ids":
        missing = sorted(user.name for user in users.users.values() if user.id is None)
        if not missing:
            print("every user has an id", file=stdout)
            return
        message = f"gave an id to {len(missing)} users: {', '.join(missing)}"
        name = None
    else:
        name = args.name
    if args.command == "add":
        try:
            checkName(name, "user name")
        except ValueError as e:
            raise CommandError(str(e))
        if users.get(name) is not None:
            raise CommandError(f"user {name!r} exists; use 'passwd' or 'set'")
        _checkSettings(args)
        password = None if args.no_password else _readPassword(stdin, stderr)
        users.users[name] = User(name, password, args.role or VIEWER, args.hosts or (),
                                 args.groups or (), id=newUserId())
        message = f"added {_describe(users.users[name])}"
    elif args.command == "passwd":
        user = _user(users, name)
        user.password = _readPassword(stdin, stderr)
        message = f"changed the password of {name} (their sessions end)"
    elif args.command == "set":
        user = _user(users, name)
        _checkSettings(args)
        if args.role is not None:
            user.role = args.role
        if args.hosts is not None:
            user.hosts = args.hosts
        if args.groups is not None:
            user.groups = args.groups
        message = f"set {_describe(user)}"
    elif args.command == "remove":
        _user(users, name)
        del users.users[name]
        message = f"removed {name} (their sessions and tokens end)"
    elif args.command == "token":
        user = _user(users, name)
        token = passwords.newToken()
        tokenId = os.urandom(5).hex()
        user.tokens[tokenId] = Token(tokenId, passwords.tokenDigest(token), round(time.time(), 3),
                                     args.label or "")
        message = None
    elif args.command == "revoke":
        user = _user(users, name)
        if user.tokens.pop(args.token, None) is None:
            raise CommandError(f"user {name!r} has no token {args.token!r}")
        message = f"revoked token {args.token} of {name}"
    for user in users.users.values():
        if user.id is None:
            user.id, user.predatesIds = newUserId(), olderFile
    writeUsers(path, Users(users.users.values()))
    if args.command == "token":
        print(f"token {tokenId} of {name} (shown once, keep it secret):", file=stderr)
        print(token, file=stdout)
    else:
        print(message, file=stdout)


def parser():
    top = argparse.ArgumentParser(
        prog="resmon-users",
        description="Write the users file of 'twistd resmon --users FILE' (atomically, mode "
                    "0600). Passwords are prompted for twice; when standard input is not a "
                    "terminal, they are read from it as two lines. A running web role reads "
                    "the file again within a second of a change.")
    top.add_argument("file", help="the users file (TOML)")
    commands = top.add_subparsers(dest="command", required=True)

    def settings(command, defaults):
        command.add_argument("--role", choices=ROLES, default=VIEWER if defaults else None,
                             help="viewer (reads), operator (also posts events and manages "
                                  "webhooks), admin (sees every host and every webhook)")
        command.add_argument("--hosts", type=_list, default=None,
                             help="comma-separated host names or patterns the user may see "
                                  "('#': every host)")
        command.add_argument("--groups", type=_list, default=None,
                             help="comma-separated groups (for group.<group>.notify)")

    add = commands.add_parser("add", help="add a user (prompts for the password)")
    add.add_argument("name")
    settings(add, True)
    add.add_argument("--no-password", action="store_true",
                     help="a user who may only use API tokens")
    commands.add_parser("passwd", help="change a user's password (prompted)").add_argument("name")
    change = commands.add_parser("set", help="change a user's role, hosts or groups")
    change.add_argument("name")
    settings(change, False)
    commands.add_parser("remove", help="remove a user").add_argument("name")
    token = commands.add_parser("token", help="create an API token (printed once)")
    token.add_argument("name")
    token.add_argument("--label", default="", help="what the token is for")
    revoke = commands.add_parser("revoke", help="revoke an API token by its id")
    revoke.add_argument("name")
    revoke.add_argument("token", help="the token's id (see 'list')")
    commands.add_parser("list", help="list users, their roles, hosts, groups and token ids")
    commands.add_parser(
        "ids", help="give each user of a file written before users had ids one (any change "
                    "does too); run it once every process reading the file is upgraded")
    return top


def main(argv=None, stdin=None, stdout=None, stderr=None):
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    args = parser().parse_args(argv)
    try:
        run(args, stdin, stdout, stderr)
    except CommandError as e:
        print(f"resmon-users: error: {e}", file=stderr)
        return 1
    except OSError as e:
        print(f"resmon-users: error: {args.file}: {e.strerror}", file=stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
