"""
The users file (C{--users}): TOML, one table per user with their password
hash, role, host patterns, groups and API tokens (kept hashed). Read and
checked by L{loadUsers}; written only by L{writeUsers}, atomically and
readable by its owner only (see C{resmon-users} and C{docs/security.md}).
"""

import json
import re
import secrets
from dataclasses import dataclass, field

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from resmon.atomicfile import writeAtomically
from resmon.auth import passwords
from resmon.auth.principal import ROLES, VIEWER, Principal

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
TOKEN_ID = re.compile(r"^[a-z0-9]{4,32}$")
# A user's id: given once, when resmon-users adds the user (or first writes
# a file whose user has none, marking them predates_ids), and never again; a
# user removed and added under the same name is another user, with another id.
USER_ID = re.compile(r"[0-9a-f]{16,64}")
MAX_PATTERN = 255
_USER_KEYS = {"id", "predates_ids", "password", "role", "hosts", "groups", "tokens"}
_TOKEN_KEYS = {"sha256", "created", "label"}


class UsersFileError(ValueError):
    """
    A users file that cannot be used; the message names the user and field.
    """


@dataclass
class Token:
    id: str
    digest: str
    created: float = 0.0
    label: str = ""


@dataclass
class User:
    """
    One user of the users file.

    @ivar password: the encoded password hash (see L{passwords}), or
        L{None} for a user who may only use API tokens.
    @ivar hosts: the host patterns the user may see (C{"#"}: every host);
        ignored for admins, who see every host.
    @ivar id: what tells this user from another of the same name, before
        or after (what a webhook's owner is bound to); L{None} in a file no
        C{resmon-users} of this version wrote yet.
    @ivar predatesIds: whether the user was in the file before users had
        ids (their id was filled in): only such a user owns the webhooks
        registered under their name before then, which are bound to no id.
    """

    name: str
    password: str = None
    role: str = VIEWER
    hosts: tuple = ()
    groups: tuple = ()
    tokens: dict = field(default_factory=dict)
    id: str = None
    predatesIds: bool = False

    def principal(self):
        """
        The user's L{Principal}: one per L{User} read, so that what it
        remembers of hosts it may see serves every request of the user.
        """
        principal = self.__dict__.get("_principal")
        if principal is None:
            principal = self.__dict__["_principal"] = Principal(
                self.name, self.role, self.hosts, self.groups, userId=self.id,
                predatesIds=self.predatesIds)
        return principal


class Users:
    """
    Every user of a users file, and their tokens by digest.
    """

    def __init__(self, users=()):
        self.users = {user.name: user for user in users}
        self.byTokenDigest = {token.digest: (user, token) for user in self.users.values()
                              for token in user.tokens.values()}

    def get(self, name):
        return self.users.get(name)

    def tokenUser(self, token):
        """
        The L{User} and L{Token} of an API token, or L{None}.
        """
        return self.byTokenDigest.get(passwords.tokenDigest(token))


def newUserId():
    """
    A new user's id: 128 random bits, in hex.
    """
    return secrets.token_hex(16)


def _strings(value, where, check):
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsersFileError(f"{where}: expected a list of strings")
    for item in value:
        check(item, where)
    return tuple(value)


def checkName(name, what="name"):
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{what} {name!r}: expected 1 to 64 letters, digits, '_', '.', '@' or '-'")
    return name


def checkPattern(pattern, where="hosts"):
    if not pattern.strip() or len(pattern) > MAX_PATTERN or any(ord(c) < 32 for c in pattern):
        raise UsersFileError(f"{where}: {pattern[:60]!r} is not a host name or pattern")


def _group(group, where):
    try:
        checkName(group, "group")
    except ValueError as e:
        raise UsersFileError(f"{where}: {e}")


def parseUsers(document):
    """
    The L{Users} of a parsed users file.

    @raise UsersFileError: naming the user and field of the first problem.
    """
    unknown = set(document) - {"users"}
    if unknown:
        raise UsersFileError(f"unknown top-level key {sorted(unknown)[0]!r}: expected [users.<name>] tables")
    table = document.get("users", {})
    if not isinstance(table, dict):
        raise UsersFileError("users: expected [users.<name>] tables")
    users = []
    for name, entry in table.items():
        where = f"user {name!r}"
        try:
            checkName(name, "user name")
        except ValueError as e:
            raise UsersFileError(str(e))
        if not isinstance(entry, dict):
            raise UsersFileError(f"{where}: expected a table")
        unknown = set(entry) - _USER_KEYS
        if unknown:
            raise UsersFileError(f"{where}: unknown field {sorted(unknown)[0]!r} "
                                 f"(expected {', '.join(sorted(_USER_KEYS))})")
        userId = entry.get("id")
        if userId is not None and not (isinstance(userId, str) and USER_ID.fullmatch(userId)):
            raise UsersFileError(f"{where}: id: expected 16 to 64 lower-case hex digits, "
                                 "as resmon-users writes")
        predatesIds = entry.get("predates_ids", False)
        if not isinstance(predatesIds, bool) or (predatesIds and userId is None):
            raise UsersFileError(f"{where}: predates_ids: expected true or false, and an id")
        password = entry.get("password")
        if password is not None:
            if not isinstance(password, str):
                raise UsersFileError(f"{where}: password: expected a hash written by resmon-users")
            try:
                passwords.parseHash(password)
            except passwords.InvalidHash as e:
                raise UsersFileError(f"{where}: password: {e}")
        role = entry.get("role", VIEWER)
        if role not in ROLES:
            raise UsersFileError(f"{where}: role: must be one of {', '.join(ROLES)}, not {role!r}")
        hosts = _strings(entry.get("hosts", []), f"{where}: hosts", checkPattern)
        groups = _strings(entry.get("groups", []), f"{where}: groups", _group)
        tokens = {}
        tokenTable = entry.get("tokens", {})
        if not isinstance(tokenTable, dict):
            raise UsersFileError(f"{where}: tokens: expected [users.{name}.tokens.<id>] tables")
        for tokenId, token in tokenTable.items():
            tokenWhere = f"{where}: token {tokenId!r}"
            if not TOKEN_ID.match(tokenId) or not isinstance(token, dict):
                raise UsersFileError(f"{tokenWhere}: expected an id of 4 to 32 lower-case letters "
                                     "or digits and a table")
            unknown = set(token) - _TOKEN_KEYS
            if unknown:
                raise UsersFileError(f"{tokenWhere}: unknown field {sorted(unknown)[0]!r}")
            digest = token.get("sha256")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise UsersFileError(f"{tokenWhere}: sha256: expected 64 hex digits")
            created, label = token.get("created", 0.0), token.get("label", "")
            if not isinstance(created, (int, float)) or not isinstance(label, str):
                raise UsersFileError(f"{tokenWhere}: created is a number, label a string")
            tokens[tokenId] = Token(tokenId, digest, float(created), label)
        users.append(User(name, password, role, hosts, groups, tokens, userId, predatesIds))
    result = Users(users)
    if len(result.byTokenDigest) != sum(len(user.tokens) for user in users):
        raise UsersFileError("two tokens have the same sha256")
    ids = [user.id for user in users if user.id is not None]
    if len(set(ids)) != len(ids):
        raise UsersFileError("two users have the same id")
    return result


def loadUsers(path):
    """
    Read and check the users file at C{path}.

    @raise UsersFileError: with one line saying what is wrong, and where.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise UsersFileError(f"cannot read {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise UsersFileError(f"{path} is not valid TOML: {e}")
    except UnicodeDecodeError:
        raise UsersFileError(f"{path} is not UTF-8")
    try:
        return parseUsers(document)
    except UsersFileError as e:
        raise UsersFileError(f"{path}: {e}")


def _string(text):
    # A TOML basic string: JSON's escapes are TOML's, but for DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def dumpUsers(users):
    """
    The TOML text of L{Users}.
    """
    lines = ["# resmon users file: written by resmon-users (see docs/security.md).", ""]
    for user in sorted(users.users.values(), key=lambda u: u.name):
        lines.append(f"[users.{_string(user.name)}]")
        if user.id is not None:
            lines.append(f"id = {_string(user.id)}")
        if user.predatesIds:
            lines.append("predates_ids = true")
        if user.password is not None:
            lines.append(f"password = {_string(user.password)}")
        lines.append(f"role = {_string(user.role)}")
        lines.append(f"hosts = [{', '.join(map(_string, user.hosts))}]")
        lines.append(f"groups = [{', '.join(map(_string, user.groups))}]")
        lines.append("")
        for token in sorted(user.tokens.values(), key=lambda t: t.id):
            lines.append(f"[users.{_string(user.name)}.tokens.{token.id}]")
            lines.append(f"sha256 = {_string(token.digest)}")
            lines.append(f"created = {token.created!r}")
            lines.append(f"label = {_string(token.label)}")
            lines.append("")
    return "\n".join(lines)


def writeUsers(path, users):
    """
    Replace the users file at C{path} with C{users}, atomically (a reader
    sees the old file or the new one, never part of one) and with mode 0600.
    """
    text = dumpUsers(users)
    parseUsers(tomllib.loads(text))  # never write a file the web role would refuse
    writeAtomically(path, text, mode=0o600)
