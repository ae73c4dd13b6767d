"""
Users and trust at the web role, unit by unit: password and token hashing,
the users file (checks, atomic 0600 writes), sessions, the login throttle
and the guard, with Twisted's fakes (Clock, DummyRequest).
"""

import os
import stat

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from resmon.auth import passwords
from resmon.auth.guard import AuthGuard
from resmon.auth.principal import REQUEST_ATTRIBUTE, UNRESTRICTED, principalOf
from resmon.auth.sessions import COOKIE, SessionStore
from resmon.auth.throttle import LoginThrottle
from resmon.auth.usersfile import (
    Token, User, Users, UsersFileError, dumpUsers, loadUsers, newUserId, parseUsers, writeUsers)
from resmon.webserver.origins import OriginPolicy

# The weakest parameters a users file may hold: fast tests, same code.
FAST = {"n": 2 ** 14, "r": 8, "p": 1}


def test_password_hash_is_salted_scrypt_with_its_parameters():
    one, two = passwords.hashPassword("correct horse"), passwords.hashPassword("correct horse")
    assert one != two  # a random salt each time
    assert one.startswith("scrypt$n=32768,r=8,p=3$")
    assert passwords.verifyPassword("correct horse", one)
    assert not passwords.verifyPassword("correct horsf", one)
    assert not passwords.verifyPassword("correct horse", "plain")


@pytest.mark.parametrize("encoded", [
    "sha256$n=16384,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,   # another scheme
    "scrypt$n=1024,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,    # too weak
    "scrypt$n=16384,r=8,p=1$c2FsdA$" + "A" * 43,                    # short salt
    "scrypt$n=16384,r=8$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,        # missing p
    "5f4dcc3b5aa765d61d8327deb882cf99",                            # a fast hash
])
def test_weak_or_foreign_hashes_are_refused(encoded):
    with pytest.raises(passwords.InvalidHash):
        passwords.parseHash(encoded)
    assert not passwords.verifyPassword("password", encoded)


def test_tokens_are_random_and_kept_as_their_sha256():
    token = passwords.newToken()
    assert token.startswith("rmt_") and len(token) >= 40 and token != passwords.newToken()
    digest = passwords.tokenDigest(token)
    assert len(digest) == 64 and token not in digest


def _users(tmp_path, *users):
    path = str(tmp_path / "users.toml")
    writeUsers(path, Users(users))
    return path


def test_written_file_is_0600_and_reads_back(tmp_path):
    user = User("alice", passwords.hashPassword("pw-alice-1", FAST), "operator", ("web01", "db.#"),
                ("ops",), {"abcd1234": Token("abcd1234", "0" * 64, 1.5, 'ci "main"')})
    path = _users(tmp_path, user, User("bob", None, "viewer"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    users = loadUsers(path)
    assert users.get("alice") == user and users.get("bob").password is None
    assert users.byTokenDigest["0" * 64][0].name == "alice"
    assert os.listdir(tmp_path) == ["users.toml"]  # no temporary file left


def test_write_replaces_atomically_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = _users(tmp_path, User("alice"))
    before = open(path).read()
    inode = os.stat(path).st_ino

    def failingReplace(source, target):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", failingReplace)
    with pytest.raises(OSError):
        writeUsers(path, Users([User("alice"), User("bob")]))
    monkeypatch.undo()
    assert open(path).read() == before and os.listdir(tmp_path) == ["users.toml"]
    writeUsers(path, Users([User("alice"), User("bob")]))
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    assert set(loadUsers(path).users) == {"alice", "bob"}


@pytest.mark.parametrize("text, expected", [
    ('[users.alice]\nrole = "boss"\n', "user 'alice': role: must be one of viewer, operator, admin"),
    ('[users.alice]\npassword = "hunter2"\n', "user 'alice': password:"),
    ('[users.alice]\nhosts = "web01"\n', "user 'alice': hosts: expected a list of strings"),
    ('[users.alice]\ngroups = ["a b"]\n', "user 'alice': groups:"),
    ('[users.alice]\nrole = "viewer"\nrol = "admin"\n', "user 'alice': unknown field 'rol'"),
    ('[users."al ice"]\n', "user name 'al ice'"),
    ('[users.alice.tokens.abcd]\nsha256 = "xyz"\n', "user 'alice': token 'abcd': sha256"),
    ('[users.alice\n', "is not valid TOML"),
    ('[users.alice]\nid = "not hex"\n', "user 'alice': id: expected 16 to 64 lower-case hex"),
    ('[users.alice]\nid = 7\n', "user 'alice': id:"),
    ('[users.alice]\nid = "%s\\n"\n' % ("ab" * 16), "user 'alice': id:"),
    ('[users.alice]\npredates_ids = true\n', "user 'alice': predates_ids: expected true or false, and an id"),
    ('[users.alice]\nid = "%s"\npredates_ids = 1\n' % ("ab" * 16), "user 'alice': predates_ids:"),
    ('[users.alice]\nid = "%s"\n[users.bob]\nid = "%s"\n' % ("ab" * 16, "ab" * 16),
     "two users have the same id"),
])
def test_bad_files_are_refused_with_one_line_naming_user_and_field(tmp_path, text, expected):
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(UsersFileError) as e:
        loadUsers(str(path))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_users_id_is_written_read_back_and_given_to_their_principal(tmp_path):
    path = _users(tmp_path, User("alice", None, "operator", ("web-*",), id="c0" * 16),
                  User("bob"), User("carol", id="c1" * 16, predatesIds=True))
    users = loadUsers(path)
    assert users.get("alice").id == "c0" * 16 and users.get("bob").id is None
    assert users.get("alice").principal().userId == "c0" * 16
    assert users.get("bob").principal().userId is None
    assert [users.get(n).principal().predatesIds for n in ("alice", "bob", "carol")] == [
        False, False, True]
    assert "predates_ids = true" in open(path).read()
    assert len(newUserId()) == 32 and newUserId() != newUserId()


def test_the_users_watcher_warns_of_users_without_ids(tmp_path):
    from twisted.logger import globalLogPublisher

    from resmon.auth.service import UsersFileWatcher
    warnings = []

    def observer(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            warnings.append(event)
    globalLogPublisher.addObserver(observer)
    try:
        path = _users(tmp_path, User("alice", id="c0" * 16), User("bob"))
        watcher = UsersFileWatcher(path)
        assert [w["missing"] for w in warnings] == [1]
        assert "resmon-users {path} ids" in warnings[0]["log_format"]
        writeUsers(path, Users([User("alice", id="c0" * 16), User("bob", id="c1" * 16)]))
        os.utime(path, ns=(1, 1))                 # a change the watcher sees
        assert watcher.poll() and len(warnings) == 1
    finally:
        globalLogPublisher.removeObserver(observer)


def test_dump_escapes_what_toml_needs():
    user = User("a@b.c", None, "viewer", ('we"b\\01\x7f',), ("g",))
    assert parseUsers(__import__("tomllib").loads(dumpUsers(Users([user])))).get("a@b.c") == user


def test_sessions_expire_and_end_with_their_user():
    clock = Clock()
    sessions = SessionStore(clock, lifetime=60)
    session = sessions.create("alice", "hash1")
    assert sessions.get(session.id) is session and len(session.id) >= 40
    clock.advance(59)
    assert sessions.isOpen(session)
    clock.advance(1)
    assert sessions.get(session.id) is None and len(sessions) == 0
    kept = sessions.create("alice", "hash1")
    changed = sessions.create("alice", "hash0")
    gone = sessions.create("carol", "hash3")
    assert sessions.revokeStale(Users([User("alice", "hash1")])) == 2
    assert sessions.isOpen(kept) and not sessions.isOpen(changed) and not sessions.isOpen(gone)
    sessions.revoke(kept.id)
    assert not sessions.isOpen(kept)


def test_sessions_per_user_are_bounded():
    sessions = SessionStore(Clock(), maxPerUser=3)
    created = [sessions.create("alice", "h") for _ in range(5)]
    assert [sessions.isOpen(s) for s in created] == [False, False, True, True, True]


def test_throttle_doubles_the_wait_per_address_and_per_name():
    clock = Clock()
    throttle = LoginThrottle(clock, freeFailures=3, firstDelay=1, maxDelay=8)
    for _ in range(3):
        assert throttle.wait("10.0.0.1", "alice") == 0
        throttle.failed("10.0.0.1", "alice")
    assert throttle.wait("10.0.0.1", "alice") == 0
    throttle.failed("10.0.0.1", "alice")
    assert throttle.wait("10.0.0.1", "alice") == 1
    assert throttle.wait("10.0.0.2", "alice") == 1   # the name, from elsewhere
    assert throttle.wait("10.0.0.1", "bob") == 1     # the address, for another name
    assert throttle.wait("10.0.0.2", "bob") == 0
    clock.advance(1)
    throttle.failed("10.0.0.1", "alice")
    assert throttle.wait("10.0.0.1", "alice") == 2
    for _ in range(5):
        clock.advance(8)
        throttle.failed("10.0.0.1", "alice")
    assert throttle.wait("10.0.0.1", "alice") == 8   # capped
    clock.advance(8)
    throttle.succeeded("10.0.0.1", "alice")
    assert throttle.wait("10.0.0.3", "alice") == 0   # the name's failures end with a success
    throttle.failed("10.0.0.1", "carol")
    assert throttle.wait("10.0.0.1", "carol") > 0     # the address's do not
    assert throttle.refused == 6


def test_a_name_kept_waiting_by_others_still_logs_in_from_where_it_did_before():
    """
    Whoever fails on purpose for a name each time its wait runs out keeps
    that name waiting everywhere but at the addresses it logged in from in
    the last 30 days; there only the address's own failures count.
    """
    from resmon.auth.throttle import TRUSTED_FOR
    clock = Clock()
    throttle = LoginThrottle(clock, freeFailures=3, firstDelay=2, maxDelay=300)
    throttle.succeeded("10.0.0.7", "admin")          # the admin's machine
    for _ in range(50):                              # a day of an attacker's tries
        clock.advance(max(throttle.wait("203.0.113.9", "admin"), 1))
        throttle.failed("203.0.113.9", "admin")
    assert throttle.wait("198.51.100.1", "admin") > 0   # a new address waits
    assert throttle.wait("10.0.0.7", "admin") == 0      # the admin's does not
    for _ in range(4):
        throttle.failed("10.0.0.7", "admin")             # its own failures count
    assert throttle.wait("10.0.0.7", "admin") > 0
    clock.advance(TRUSTED_FOR + 600)
    for _ in range(4):
        throttle.failed("203.0.113.9", "admin")
    assert throttle.wait("10.0.0.7", "admin") > 0       # trusted no longer: the name's wait


def test_throttle_treats_unknown_and_known_names_alike():
    # The throttle never looks at the users: only at the names tried.
    clock = Clock()
    throttle = LoginThrottle(clock, freeFailures=0, firstDelay=1)
    throttle.failed("a", "nobody")
    throttle.failed("b", "alice")
    assert throttle.wait("c", "nobody") == throttle.wait("d", "alice") == 1


class _Watcher:
    def __init__(self, users):
        self.current = users


def _request(path, method=b"GET", headers=(), cookie=None):
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.path = path
    request.method = method
    for name, value in headers:
        request.requestHeaders.setRawHeaders(name, [value])
    request.requestHeaders.setRawHeaders(b"host", [b"127.0.0.1:8080"])
    request.isSecure = lambda: False
    request.getCookie = lambda name: cookie if name == COOKIE.encode() else None
    return request


def _guard():
    token = passwords.newToken()
    viewer = User("val", "hash-val", "viewer", ("web01",),
                  tokens={"t1": Token("t1", passwords.tokenDigest(token))})
    users = _Watcher(Users([viewer, User("otto", "hash-otto", "operator", ("#",))]))
    clock = Clock()
    return AuthGuard(users, SessionStore(clock, 60), OriginPolicy()), token, clock


def test_guard_without_credential_redirects_pages_and_refuses_apis():
    guard, _, _ = _guard()
    request = _request(b"/")
    answer = guard(request)
    assert answer.render(request) and request.responseCode == 303
    assert request.responseHeaders.getRawHeaders(b"location") == [b"/login"]
    for path in (b"/api/hosts", b"/api/stream", b"/ws", b"/js/main.js", b"/api/webhooks"):
        request = _request(path)
        body = guard(request).render(request)
        assert request.responseCode == 401 and b'"error"' in body, path
        assert principalOf(request) is UNRESTRICTED and not hasattr(request, REQUEST_ATTRIBUTE)
    for path in (b"/login.html", b"/login.js", b"/login.css", b"/favicon.svg", b"/healthz"):
        assert guard(_request(path)) is None, path


def test_guard_sets_the_principal_of_a_token_and_of_a_session():
    guard, token, clock = _guard()
    request = _request(b"/api/hosts", headers=[(b"authorization", b"Bearer " + token.encode())])
    assert guard(request) is None and principalOf(request).name == "val"
    assert principalOf(request).hosts == ("web01",)
    wrong = _request(b"/api/hosts", headers=[(b"authorization", b"Bearer rmt_nope")])
    assert guard(wrong) is not None
    session = guard.sessions.create("otto", "hash-otto")
    request = _request(b"/api/hosts", cookie=session.id.encode())
    assert guard(request) is None and principalOf(request).name == "otto"
    clock.advance(60)
    assert guard(_request(b"/api/hosts", cookie=session.id.encode())) is not None


def test_guard_refuses_viewers_posting_events_and_cross_site_cookie_posts():
    guard, token, _ = _guard()
    viewerPost = _request(b"/api/events/deploy", b"POST",
                          [(b"authorization", b"Bearer " + token.encode())])
    guard(viewerPost).render(viewerPost)
    assert viewerPost.responseCode == 403
    encoded = _request(b"/api/events/deploy", b"POST",
                       [(b"authorization", b"Bearer " + token.encode())])
    encoded.path = b"/api/%65vents/deploy"  # traversal decodes it to /api/events/deploy
    guard(encoded).render(encoded)
    assert encoded.responseCode == 403
    session = guard.sessions.create("otto", "hash-otto")
    own = _request(b"/api/events/deploy", b"POST", [(b"origin", b"http://127.0.0.1:8080")],
                   cookie=session.id.encode())
    assert guard(own) is None
    for headers in ([(b"origin", b"http://evil.example")], [(b"origin", b"null")],
                    [(b"sec-fetch-site", b"cross-site")], []):
        other = _request(b"/api/events/deploy", b"POST", headers, cookie=session.id.encode())
        guard(other).render(other)
        assert other.responseCode == 403, headers
    fetchSameOrigin = _request(b"/api/events/deploy", b"POST",
                               [(b"sec-fetch-site", b"same-origin")], cookie=session.id.encode())
    assert guard(fetchSameOrigin) is None


def test_guard_closes_connections_whose_credential_ended():
    guard, token, clock = _guard()
    session = guard.sessions.create("otto", "hash-otto")
    closed = []

    class Connection:
        pass
    bySession, byToken, kept = Connection(), Connection(), Connection()
    request = _request(b"/ws", cookie=session.id.encode())
    guard(request)
    guard.watch(bySession, request.resmonCredential, lambda connection: closed.append("session"))
    request = _request(b"/ws", headers=[(b"authorization", b"Bearer " + token.encode())])
    guard(request)
    guard.watch(byToken, request.resmonCredential, lambda connection: closed.append("token"))
    other = guard.sessions.create("otto", "hash-otto")
    request = _request(b"/ws", cookie=other.id.encode())
    guard(request)
    guard.watch(kept, request.resmonCredential, lambda connection: closed.append("kept"))
    assert guard.sweep() == 0
    guard.sessions.revoke(session.id)
    guard.users.current = Users([User("val", "hash-val", "viewer", ("web01",)),
                                 User("otto", "hash-otto", "operator", ("#",))])
    assert guard.sweep() == 2 and sorted(closed) == ["session", "token"]
    guard.users.current = Users([User("otto", "hash-otto", "operator", ("web01",))])
    assert guard.sweep() == 1 and closed[-1] == "kept"  # its rights changed: reconnect


@pytest_twisted.inlineCallbacks
def test_websocket_protocols_get_the_principal_of_their_handshake(tmp_path):
    """
    The contract for whatever filters what a connection receives: each
    WebSocket protocol's C{principal} is its handshake's (UNRESTRICTED
    without --users), set before it opens.
    """
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from resmon.services.web import buildSite
    from resmon.webserver.fanout import EventFanout

    (tmp_path / "index.html").write_text("<p>dashboard</p>")
    fanout = EventFanout()
    site = buildSite(fanout, reactor, root=str(tmp_path))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    number = port.getHost().port
    opened = []

    class Client(WebSocketClientProtocol):
        def onOpen(self):
            opened.append(self)

    @defer.inlineCallbacks
    def connect(headers, count):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{number}/ws", headers=headers)
        factory.protocol = Client
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(factory)
        yield waitFor(lambda: len(fanout.clients) == len(opened) == count)

    @defer.inlineCallbacks
    def waitFor(condition):
        for _ in range(200):
            if condition():
                return
            yield deferLater(reactor, 0.02)
        raise AssertionError("timed out")

    from twisted.internet.task import deferLater
    try:
        yield connect({}, 1)
        assert [p.principal for p in fanout.clients] == [UNRESTRICTED]
        guard, token, _ = _guard()
        site.guard = guard
        yield connect({"Authorization": f"Bearer {token}"}, 2)
        names = sorted(str(p.principal.name) for p in fanout.clients)
        assert names == ["None", "val"]
        assert len(guard._watched) == 1
    finally:
        for client in opened:
            client.dropConnection(abort=True)
        yield port.stopListening()
    # A connection gone is forgotten (nothing but it holds its entry).
    yield waitFor(lambda: not fanout.clients)
    import gc
    gc.collect()
    guard.sweep()
    assert len(guard._watched) == 0


def _loginRequest(guard, body, secure=False, origin=b"http://127.0.0.1:8080"):
    from io import BytesIO

    from twisted.web.server import Request
    from twisted.web.test.requesthelper import DummyChannel

    channel = DummyChannel()
    if secure:
        channel.transport = DummyChannel.SSL()
    request = Request(channel)
    request.method, request.uri, request.path = b"POST", b"/login", b"/login"
    request.clientproto = b"HTTP/1.1"
    request.requestHeaders.setRawHeaders(b"host", [b"127.0.0.1:8080"])
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
    if origin is not None:
        request.requestHeaders.setRawHeaders(b"origin", [origin])
    request.content = BytesIO(body)
    return request


def _loginResource(guard, clock):
    from twisted.internet import defer

    from resmon.auth.login import LoginResource
    checked = []

    def verify(password, encoded):
        checked.append(encoded)
        return defer.succeed(password == "right-password" and encoded == "hash-otto")
    return LoginResource(None, guard, LoginThrottle(clock), clock, verify), checked


@pytest.mark.parametrize("secure", [False, True])
def test_login_sets_a_strict_httponly_cookie_secure_over_tls(secure):
    guard, _, clock = _guard()
    login, _ = _loginResource(guard, clock)
    request = _loginRequest(guard, b'{"name": "otto", "password": "right-password"}', secure,
                            origin=b"https://127.0.0.1:8080" if secure else b"http://127.0.0.1:8080")
    login.render(request)
    assert request.code == 200 and request.finished
    session = [c for c in request.cookies if c.startswith(b"resmon_session=")][0].decode()
    flags = {flag.strip().lower() for flag in session.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=60"} <= flags
    assert ("secure" in flags) == secure
    assert len(guard.sessions) == 1


def test_login_checks_unknown_names_against_a_hash_of_the_same_cost():
    guard, _, clock = _guard()
    login, checked = _loginResource(guard, clock)
    answers = []
    for name in (b"otto", b"nobody", b"val"):
        request = _loginRequest(guard, b'{"name": "' + name + b'", "password": "wrong-password"}')
        login.render(request)
        answers.append((request.code, request.cookies))
    assert answers == [(401, [])] * 3
    assert checked[0] == "hash-otto" and checked[1] == passwords.dummyHash()
    assert passwords.parseHash(passwords.dummyHash())[0] == passwords.DEFAULT_PARAMETERS


@pytest.mark.parametrize("body", [b"[" * 60000, b'{"name": ' * 30000, b"\xff{", b"[1, 2]", b"{"])
def test_login_bodies_that_are_not_credentials_are_a_plain_refusal(body):
    """
    Nesting too deep for the JSON decoder (under the body limit), bad UTF-8
    or JSON, or not an object: a 400 saying what a login takes, no
    traceback, no password checked.
    """
    guard, _, clock = _guard()
    login, checked = _loginResource(guard, clock)
    request = _loginRequest(guard, body)
    answer = login.render(request)
    assert request.code == 400 and b"expected a JSON object" in answer
    assert not checked and not request.cookies


def test_login_from_another_origin_is_refused():
    guard, _, clock = _guard()
    login, checked = _loginResource(guard, clock)
    for origin in (b"http://evil.example", None):
        request = _loginRequest(guard, b'{"name": "otto", "password": "right-password"}',
                                origin=origin)
        login.render(request)
        assert request.code == 403 and not checked and not request.cookies


@pytest.mark.parametrize("argv, expected", [
    (["--role=agent", "--users=users.toml"], "--users: means nothing for --role=agent"),
    (["--role=web", "--session-lifetime=0"], "--session-lifetime: must be between"),
    (["--role=web", "--users=/nonexistent/users.toml"], "--users: cannot read /nonexistent/users.toml"),
])
def test_users_options_are_checked_with_one_line(argv, expected):
    from resmon.tap import Options
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(argv)
    text = str(e.value.code)
    assert expected in text and "\n" not in text, text


def test_without_users_nothing_changes():
    from resmon.tap import Options
    options = Options()
    options.parseOptions(["--role=web"])
    assert options["users"] is None and options["session-lifetime"] == 43200


def test_users_service_reloads_the_file_ends_sessions_and_logs_counters(tmp_path):
    from twisted.logger import globalLogPublisher

    from resmon.auth.service import UsersFileWatcher, UsersService
    path = str(tmp_path / "users.toml")
    hashA, hashV = (passwords.hashPassword(p, FAST) for p in ("password-a", "password-v"))
    writeUsers(path, Users([User("otto", hashA, "operator"), User("val", hashV)]))
    clock = Clock()
    watcher = UsersFileWatcher(path)
    sessions = SessionStore(clock, 3600)
    guard = AuthGuard(watcher, sessions, OriginPolicy())
    users = UsersService(watcher, sessions, guard, clock, interval=1, statsInterval=60)
    kept, ended = sessions.create("otto", hashA), sessions.create("val", hashV)
    lines = []
    globalLogPublisher.addObserver(lines.append)
    try:
        users.startService()
        writeUsers(path, Users([User("otto", hashA, "operator")]))
        clock.advance(1)
        assert watcher.reloads == 1 and sessions.isOpen(kept) and not sessions.isOpen(ended)
        with open(path, "w") as f:
            f.write("[users.otto]\nrole = 'boss'\n")
        clock.advance(1)
        assert watcher.errors == 1 and watcher.current.get("otto").role == "operator"
        clock.advance(60)
        users.stopService()
    finally:
        globalLogPublisher.removeObserver(lines.append)
    texts = [e.get("log_format", "") for e in lines]
    assert any(t.startswith("{sessions} sessions; logins:") for t in texts)
    assert any(t.startswith("kept the previous users") for t in texts)
    assert clock.getDelayedCalls() == []


def test_attempts_sent_together_are_not_all_checked():
    from twisted.internet import defer

    from resmon.auth.login import LoginResource
    guard, _, clock = _guard()
    checks = []

    def verify(password, encoded):
        checks.append(defer.Deferred())
        return checks[-1]
    login = LoginResource(None, guard, LoginThrottle(clock), clock, verify)
    requests = [_loginRequest(guard, b'{"name": "otto", "password": "guess-%d"}' % i)
                for i in range(3)]
    for request in requests:
        login.render(request)
    assert len(checks) == 1 and [r.code for r in requests[1:]] == [429, 429]
    checks[0].callback(False)
    assert requests[0].code == 401 and not login._pending
    again = _loginRequest(guard, b'{"name": "otto", "password": "guess-4"}')
    login.render(again)
    assert len(checks) == 2
    checks[1].callback(False)


def test_a_users_host_patterns_are_names_globs_or_topic_patterns():
    """
    A viewer of C{web-*} sees the web hosts and nothing of the db ones.
    """
    from resmon.auth.principal import Principal
    viewer = Principal("alice", "viewer", ["web-*", "db-07", "cache.#"])
    assert [h for h in ["web-01", "web-02.example", "db-01", "db-07", "webx-01", "cache"]
            if viewer.maySee(h)] == ["web-01", "web-02.example", "db-07", "cache"]
    assert Principal("root", "admin", ["nothing"]).maySee("db-01")
    assert not Principal("nobody", "viewer", []).maySee("web-01")
