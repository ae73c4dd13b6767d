"""
Users, sessions and tokens at a real C{twistd resmon --users ...} process:
the resmon-users command run as a real program, login and logout over
HTTP, cookie flags, bearer tokens on the API and the event stream, roles,
the cross-site check, the login throttle, and WebSockets refused without a
session and closed with 1008 when it ends.
"""

import http.client
import json
import os
import stat
import subprocess
import sys
import time

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from io import BytesIO

from support import (
    TWISTD, SSEReader, WebSocketRecorder, rawWebSocket, startedWeb, waitUntil, withTimeout)

USERS = os.path.join(os.path.dirname(sys.executable), "resmon-users")


def users(path, *args, password=None):
    """
    Run resmon-users on C{path}; C{password} is fed twice on standard input.
    """
    stdin = None if password is None else f"{password}\n{password}\n"
    return subprocess.run([USERS, str(path)] + list(args), input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_resmon_users_writes_the_file_safely(tmp_path):
    path = tmp_path / "users.toml"
    result = users(path, "add", "alice", "--role=operator", "--hosts=web01,db.#",
                   "--groups=ops", password="alice-password")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "alice-password" not in text and 'password = "scrypt$n=32768,r=8,p=3$' in text
    mismatch = subprocess.run([USERS, str(path), "add", "bob"], input="bob-password\nbob-passw0rd\n",
                              capture_output=True, text=True, timeout=60)
    assert mismatch.returncode == 1 and "the two passwords differ" in mismatch.stderr
    short = users(path, "add", "bob", password="short")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert users(path, "add", "alice", password="whatever-1").returncode == 1
    token = users(path, "token", "alice", "--label=ci")
    assert token.returncode == 0 and token.stdout.strip().startswith("rmt_")
    assert token.stdout.strip() not in path.read_text()  # only its hash is kept
    listing = users(path, "list")
    assert "alice: operator; hosts: web01, db.#; groups: ops; tokens: " in listing.stdout
    assert "(ci)" in listing.stdout
    tokenId = listing.stdout.split("tokens: ")[1].split(" ")[0]
    assert users(path, "set", "alice", "--role=viewer").returncode == 0
    assert users(path, "revoke", "alice", tokenId).returncode == 0
    assert "alice: viewer; hosts: web01, db.#; groups: ops; tokens: none" in users(path, "list").stdout
    before = path.read_text()
    assert users(path, "revoke", "alice", tokenId).returncode == 1
    assert users(path, "passwd", "nobody", password="whatever-1").returncode == 1
    assert path.read_text() == before
    # Several at once lose no change (they take turns on a lock of the directory).
    running = [subprocess.Popen([USERS, str(path), "token", "alice"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for _ in range(5)]
    assert [p.wait(timeout=60) for p in running] == [0] * 5
    for p in running:
        p.stdout.close()
        p.stderr.close()
    assert path.read_text().count("sha256 = ") == 5
    # Each user has an id of their own, kept by every change; a user added
    # again under a removed user's name gets another one.
    ids = _ids(path)
    assert len(ids["alice"]) == 32
    assert users(path, "set", "alice", "--role=operator").returncode == 0
    assert _ids(path) == ids
    assert users(path, "remove", "alice").returncode == 0
    assert users(path, "list").stdout == ""
    assert users(path, "add", "alice", "--no-password").returncode == 0
    assert _ids(path)["alice"] not in ("", ids["alice"])
    assert "predates_ids" not in path.read_text()
    assert sorted(os.listdir(tmp_path)) == ["users.toml"]


def test_resmon_users_ids_gives_ids_and_changes_nothing_else(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text('[users.alice]\nrole = "operator"\nhosts = ["web-*"]\n')
    done = users(path, "ids")
    assert (done.returncode, done.stdout) == (0, "gave an id to 1 users: alice\n")
    assert len(_ids(path)["alice"]) == 32 and "predates_ids = true" in path.read_text()
    assert users(path, "list").stdout == (
        "alice: operator (no password: tokens only); hosts: web-*; groups: none; tokens: none\n")


def test_a_user_added_by_hand_without_an_id_gets_a_plain_one(tmp_path):
    """
    In a file that already has ids, a user without one was added by other
    means, after ids came: the next change gives them an id, not marked
    predates_ids (they must not own hooks registered before ids).
    """
    import tomllib
    path = tmp_path / "users.toml"
    assert users(path, "add", "ada", "--role=admin", "--no-password").returncode == 0
    with open(path, "a") as f:
        f.write('\n[users.alice]\nrole = "operator"\n')
    assert users(path, "token", "ada").returncode == 0
    with open(path, "rb") as f:
        table = tomllib.load(f)["users"]
    assert len(table["alice"]["id"]) == 32 and "predates_ids" not in table["alice"]
    assert "predates_ids" not in table["ada"]


def _ids(path):
    import tomllib
    with open(path, "rb") as f:
        return {name: user.get("id", "") for name, user in tomllib.load(f)["users"].items()}


def test_resmon_users_gives_an_id_to_the_users_of_an_older_file(tmp_path):
    """
    Each user of a file written before users had ids gets one at its first
    change, marked as given then (they may own hooks bound to none), even
    when that change removes one of them; a user added later is not.
    """
    import tomllib
    path = tmp_path / "users.toml"
    path.write_text('[users.alice]\nrole = "operator"\n\n[users.bob]\nrole = "viewer"\n'
                    '\n[users.carol]\nrole = "viewer"\n')
    assert users(path, "remove", "carol").returncode == 0
    ids = _ids(path)
    # Nothing left to give: 'ids' says so and writes nothing.
    before = path.read_text()
    done = users(path, "ids")
    assert (done.returncode, done.stdout) == (0, "every user has an id\n")
    assert path.read_text() == before
    assert len(ids["alice"]) == 32 and len(ids["bob"]) == 32 and ids["alice"] != ids["bob"]
    assert users(path, "add", "carol", "--no-password").returncode == 0
    with open(path, "rb") as f:
        table = tomllib.load(f)["users"]
    assert {name: user.get("predates_ids", False) for name, user in table.items()} == {
        "alice": True, "bob": True, "carol": False}
    assert _ids(path)["alice"] == ids["alice"]


def test_a_bad_users_file_stops_twistd_with_one_line(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text('[users.alice]\nrole = "boss"\n')
    for argv, expected in [([f"--users={path}"], "--users: "),
                           ([f"--users={tmp_path / 'missing.toml'}"], "--users: cannot read")]:
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "resmon"] + argv,
                                capture_output=True, text=True, timeout=60)
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and expected in lines[0], lines
    assert "user 'alice': role: must be one of" in lines[0] or "cannot read" in lines[0]


@defer.inlineCallbacks
def request(port, method, path, headers=None, body=None):
    """
    @return: a Deferred of (code, headers, body) of one HTTP request.
    """
    allHeaders = {"Host": f"127.0.0.1:{port}"}
    allHeaders.update(headers or {})
    producer = None
    if body is not None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            allHeaders.setdefault("Content-Type", "application/json")
        producer = FileBodyProducer(BytesIO(body))
    response = yield Agent(reactor).request(
        method.encode(), f"http://127.0.0.1:{port}{path}".encode(),
        Headers({k: [v] for k, v in allHeaders.items()}), producer)
    content = yield readBody(response)
    return response.code, response.headers, content


@defer.inlineCallbacks
def login(port, name, password):
    code, headers, body = yield request(port, "POST", "/login",
                                        {"Origin": f"http://127.0.0.1:{port}"},
                                        {"name": name, "password": password})
    cookie = (headers.getRawHeaders(b"set-cookie") or [b""])[0].decode()
    return code, cookie, json.loads(body)


def cookieHeader(setCookie):
    return setCookie.split(";")[0]


@defer.inlineCallbacks
def webSocket(port, headers):
    factory = WebSocketRecorder(f"ws://127.0.0.1:{port}/ws")
    factory.headers = headers
    proto = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    yield withTimeout(factory.opened, 10, "the WebSocket handshake")
    return factory, proto


@pytest_twisted.inlineCallbacks
def test_login_tokens_roles_and_websockets(twistd, tmp_path):
    path = tmp_path / "users.toml"
    assert users(path, "add", "olga", "--role=operator", "--hosts=#",
                 password="olga-password").returncode == 0
    assert users(path, "add", "vic", "--role=viewer", "--hosts=solo",
                 password="vic-password").returncode == 0
    operatorToken = users(path, "token", "olga").stdout.strip()
    viewerToken = users(path, "token", "vic").stdout.strip()
    web, port = yield startedWeb(twistd, "auth", "--name=solo", f"--users={path}")
    own = {"Origin": f"http://127.0.0.1:{port}"}

    code, headers, body = yield request(port, "GET", "/api/hosts")
    assert code == 401 and json.loads(body)["error"].startswith("authentication required")
    code, headers, _ = yield request(port, "GET", "/", {"Accept": "text/html"})
    assert code == 303 and headers.getRawHeaders(b"location") == [b"/login"]
    code, _, page = yield request(port, "GET", "/login")
    assert code == 200 and b'id="login-form"' in page
    for asset in ("/login.js", "/login.css", "/favicon.svg"):
        code, _, _ = yield request(port, "GET", asset)
        assert code == 200, asset
    code, _, _ = yield request(port, "GET", "/js/main.js")
    assert code == 401

    # Bearer tokens on the API and the event stream.
    code, _, body = yield request(port, "GET", "/api/hosts",
                                  {"Authorization": f"Bearer {operatorToken}"})
    assert code == 200 and "hosts" in json.loads(body)
    code, _, _ = yield request(port, "GET", "/api/hosts", {"Authorization": "Bearer rmt_forged"})
    assert code == 401
    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/api/stream".encode(),
        Headers({"Authorization": [f"Bearer {viewerToken}"]}))
    assert response.code == 200
    stream = SSEReader()
    response.deliverBody(stream)
    yield stream.waitFor(lambda events: any(k == "snapshot" for k, _ in events), 10, "a snapshot")
    code, _, _ = yield request(port, "GET", "/api/stream")
    assert code == 401

    # Roles: a viewer reads only.
    code, _, body = yield request(port, "POST", "/api/events/deploy",
                                  {"Authorization": f"Bearer {viewerToken}"}, b"{}")
    assert code == 403 and "may only read" in json.loads(body)["error"]
    code, _, _ = yield request(port, "POST", "/api/events/deploy",
                               {"Authorization": f"Bearer {operatorToken}"}, b"{}")
    assert code == 202

    # Login: the same answer for a wrong password and an unknown user.
    code, cookie, body = yield login(port, "olga", "wrong-password")
    assert (code, cookie, body) == (401, "", {"error": "wrong user name or password"})
    code, cookie, body = yield login(port, "nobody", "wrong-password")
    assert (code, cookie, body) == (401, "", {"error": "wrong user name or password"})
    code, cookie, body = yield login(port, "olga", "olga-password")
    assert code == 200 and body == {"name": "olga", "role": "operator"}
    flags = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert {"httponly", "samesite=strict", "path=/"} <= set(flags) and "secure" not in flags
    session = {"Cookie": cookieHeader(cookie)}
    code, _, body = yield request(port, "GET", "/api/me", session)
    assert code == 200 and json.loads(body)["name"] == "olga"

    # Cross-site: a cookie alone does not let another page act.
    code, _, body = yield request(port, "POST", "/api/events/deploy",
                                  dict(session, Origin="http://evil.example"), b"{}")
    assert code == 403 and "cross-site" in json.loads(body)["error"]
    code, _, _ = yield request(port, "POST", "/api/events/deploy", session, b"{}")
    assert code == 403
    code, _, _ = yield request(port, "POST", "/api/events/deploy", dict(session, **own), b"{}")
    assert code == 202

    # WebSocket: refused without a session, closed with 1008 after logout.
    try:
        rawWebSocket(port, timeout=10).close()
        raise AssertionError("a WebSocket opened without a session")
    except ConnectionError as e:
        assert "401" in str(e)
    client, _ = yield webSocket(port, session)
    byToken, _ = yield webSocket(port, {"Authorization": f"Bearer {viewerToken}"})
    yield client.waitFor(lambda m: m.get("kind") == "snapshot", 10, "a snapshot")
    code, headers, _ = yield request(port, "POST", "/logout", dict(session, **own))
    assert code == 200 and b"Max-Age=0" in headers.getRawHeaders(b"set-cookie")[0]
    yield waitUntil(lambda: client.closed, 5, "the socket of the ended session to close")
    assert client.closed[0][1] == 1008, client.closed
    code, _, _ = yield request(port, "GET", "/api/hosts", session)
    assert code == 401
    assert not byToken.closed

    # Revoking a token in the file closes its socket, without a restart.
    tokenId = users(path, "list").stdout.split("vic: ")[1].split("tokens: ")[1].split()[0]
    assert users(path, "revoke", "vic", tokenId).returncode == 0
    yield waitUntil(lambda: byToken.closed, 5, "the socket of the revoked token to close")
    assert byToken.closed[0][1] == 1008
    yield withTimeout(stream.done, 5, "the event stream of the revoked token to end")
    code, _, _ = yield request(port, "GET", "/api/hosts", {"Authorization": f"Bearer {viewerToken}"})
    assert code == 401
    assert b"Traceback" not in web.output


def loginFrom(address, port, name, password, forwardedFor=None):
    """
    A login from C{address} (any of 127.0.0.0/8), blocking: (code, headers,
    body); with C{forwardedFor}, as a proxy saying whom it is for.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                            source_address=(address, 0))
    headers = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"}
    if forwardedFor is not None:
        headers["X-Forwarded-For"] = forwardedFor
    try:
        connection.request("POST", "/login", json.dumps({"name": name, "password": password}),
                           headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


@pytest_twisted.inlineCallbacks
def test_login_attempts_are_throttled_alike_for_known_and_unknown_names(twistd, tmp_path):
    path = tmp_path / "users.toml"
    assert users(path, "add", "olga", password="olga-password").returncode == 0
    web, port = yield startedWeb(twistd, "auth-throttle", "--name=solo", f"--users={path}")
    for name, address in (("olga", "127.0.0.2"), ("nobody", "127.0.0.3")):
        codes = []
        for _ in range(4):
            code, _, body = yield threads.deferToThread(loginFrom, address, port, name, "wrong-pw")
            codes.append(code)
        code, headers, body = yield threads.deferToThread(
            loginFrom, address, port, name, "olga-password")
        assert codes == [401] * 4 and code == 429, (name, codes, code)
        assert "too many failed logins" in body["error"] and int(headers["Retry-After"]) >= 1
        # The name waits from any address; another name from a fresh address does not.
        code, _, _ = yield threads.deferToThread(loginFrom, "127.0.0.4", port, name, "olga-password")
        assert code == 429, name
    code, _, _ = yield threads.deferToThread(loginFrom, "127.0.0.4", port, "carol", "wrong-pw")
    assert code == 401


@pytest_twisted.inlineCallbacks
def test_behind_a_trusted_proxy_each_client_has_its_own_login_limit(twistd, tmp_path):
    path = tmp_path / "users.toml"
    assert users(path, "add", "olga", password="olga-password").returncode == 0
    # 127.0.0.2 stands for the reverse proxy.
    web, port = yield startedWeb(twistd, "auth-proxy", "--name=solo", f"--users={path}",
                                 "--trusted-proxy=127.0.0.2")

    def login(address, name, forwardedFor=None, password="wrong-pw"):
        return threads.deferToThread(loginFrom, address, port, name, password, forwardedFor)

    # A guesser behind the proxy: four failures (each for another name, so
    # only the address counts), then it waits.
    codes = []
    for n in range(4):
        code, _, _ = yield login("127.0.0.2", f"guess{n}", "198.51.100.1, 203.0.113.66")
        codes.append(code)
    code, _, body = yield login("127.0.0.2", "guess4", "203.0.113.66")
    assert codes == [401] * 4 and code == 429 and "too many failed logins" in body["error"]
    # Olga, behind the same proxy, logs in at once.
    code, _, body = yield login("127.0.0.2", "olga", "203.0.113.7", password="olga-password")
    assert code == 200, body
    assert b"failed login as 'guess3' from 203.0.113.66" in web.output
    assert b"user olga logged in from 203.0.113.7" in web.output
    # A client that reaches resmon around the proxy cannot pick its address.
    for n in range(4):
        code, _, _ = yield login("127.0.0.3", f"direct{n}", f"203.0.113.{100 + n}")
        assert code == 401
    code, _, _ = yield login("127.0.0.3", "direct4", "203.0.113.200")
    assert code == 429


@pytest_twisted.inlineCallbacks
def test_an_expired_session_is_refused_and_its_socket_closed(twistd, tmp_path):
    path = tmp_path / "users.toml"
    assert users(path, "add", "olga", "--hosts=#", password="olga-password").returncode == 0
    web, port = yield startedWeb(twistd, "auth-expiry", "--name=solo", f"--users={path}",
                                 "--session-lifetime=3")
    code, cookie, _ = yield login(port, "olga", "olga-password")
    assert code == 200 and "Max-Age=3" in cookie
    session = {"Cookie": cookieHeader(cookie)}
    client, _ = yield webSocket(port, session)
    code, _, _ = yield request(port, "GET", "/api/hosts", session)
    assert code == 200
    yield waitUntil(lambda: client.closed, 10, "the socket of the expired session to close")
    assert client.closed[0][1] == 1008
    code, _, _ = yield request(port, "GET", "/api/hosts", session)
    assert code == 401


def test_resmon_users_prompts_for_the_password_on_a_terminal(tmp_path):
    import pty
    import select

    path = tmp_path / "users.toml"
    pid, terminal = pty.fork()
    if pid == 0:  # the child, on its own terminal
        os.execv(USERS, [USERS, str(path), "add", "tess", "--hosts=#"])
    seen = b""

    def readUntil(text, timeout=30):
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} in {seen!r}"
            if select.select([terminal], [], [], 0.5)[0]:
                try:
                    seen += os.read(terminal, 1024)
                except OSError:  # the child has gone
                    break
        return seen
    readUntil(b"Password: ")
    os.write(terminal, b"tess-password\n")
    readUntil(b"Password again: ")
    os.write(terminal, b"tess-password\n")
    readUntil(b"added tess")
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"tess-password" not in seen  # not echoed
    assert "tess: viewer; hosts: #" in users(path, "list").stdout
