"""
Who owns a webhook, and who may see and manage it: the store's C{owner}
column (added to a registry made by an older resmon, on SQLite and on the
real PostgreSQL) and the API's answers to viewers, operators and admins
(in-process requests carrying the principal the authentication guard
sets).
"""

import io
import json
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from resmon.auth.principal import ADMIN, OPERATOR, REQUEST_ATTRIBUTE, VIEWER, Principal
from resmon.webhooks import store as storage
from resmon.webhooks.registry import WebhookRegistry
from resmon.webserver.webhooksapi import WebhooksResource
from webhooksupport import POSTGRESQL, postgresqlAdmin

# The registry as resmon made it before hooks had owners.
OLD_HOOKS_TABLE = """CREATE TABLE webhook_hooks (
    id TEXT PRIMARY KEY, hkey TEXT NOT NULL, url TEXT NOT NULL, secret TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
    failing_since DOUBLE PRECISION, last_attempt DOUBLE PRECISION, last_result TEXT,
    last_success DOUBLE PRECISION)"""

ALICE = Principal("alice", OPERATOR, hosts=["web-*"])
BOB = Principal("bob", OPERATOR, hosts=["db-*"])
CAROL = Principal("carol", ADMIN)
VIC = Principal("vic", VIEWER, hosts=["*"])


@pytest.fixture(params=["sqlite", "postgresql"])
def newPool(request, tmp_path):
    """
    A function making a store on a new, empty database (SQLite under
    C{tmp_path}, or a new database of the real PostgreSQL, dropped
    afterwards); a second call opens the same database again.
    """
    opened = []
    database = None
    admin = None
    if request.param == "postgresql":
        name = "resmon_owners_" + uuid.uuid4().hex[:12]
        admin = postgresqlAdmin()
        admin.cursor().execute(f"CREATE DATABASE {name}")
        database = POSTGRESQL + name

    def make():
        pool, dialect, where = storage.openPool(database, str(tmp_path))
        store = storage.WebhookStore(pool, dialect, where)
        opened.append(store)
        return store
    yield make
    for store in opened:
        store.close()
    if admin is not None:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _hook(hookId, key="a.b", owner=None):
    return storage.Hook(hookId, key, "http://127.0.0.1:1/", "secret", 1.0, storage.ACTIVE,
                        owner=owner)


def _columns(store):
    if store.dialect == "postgresql":
        query = ("SELECT column_name FROM information_schema.columns "
                 "WHERE table_name = 'webhook_hooks'")
        return store.pool.runQuery(query).addCallback(lambda rows: {r[0] for r in rows})
    return store.pool.runQuery("PRAGMA table_info(webhook_hooks)").addCallback(
        lambda rows: {r[1] for r in rows})


@pytest_twisted.inlineCallbacks
def test_an_older_registry_gets_the_owner_column_and_keeps_its_hooks(newPool):
    old = newPool()
    yield old.pool.runOperation(OLD_HOOKS_TABLE)
    yield old.pool.runOperation(
        "INSERT INTO webhook_hooks VALUES ('old', 'a.b', 'http://127.0.0.1:1/', 's', 0.5, "
        "'active', NULL, NULL, NULL, NULL)")
    assert "owner" not in (yield _columns(old))
    # The first use of the store adds the column.
    hooks = yield old.hooks()
    assert [(h.id, h.owner) for h in hooks] == [("old", None)]
    assert "owner" in (yield _columns(old))
    assert (yield old.add(_hook("new", owner="alice"), 10, 10)) is None
    # Opened again (another process, a restart): nothing to add, nothing lost.
    again = newPool()
    hooks = yield again.hooks()
    assert [(h.id, h.owner) for h in hooks] == [("old", None), ("new", "alice")]
    assert (yield again.hook("new")).describe()["owner"] == "alice"


@pytest_twisted.inlineCallbacks
def test_a_new_registry_has_owners_from_the_start(newPool):
    store = newPool()
    yield store.add(_hook("h1", owner="alice"), 10, 10)
    assert "owner" in (yield _columns(store))
    assert (yield store.hook("h1")).owner == "alice"


@pytest_twisted.inlineCallbacks
def test_the_store_limits_reads_and_removals_to_an_owner(newPool):
    store = newPool()
    for hookId, owner in [("a1", "alice"), ("b1", "bob"), ("n1", None), ("a2", "alice")]:
        yield store.add(_hook(hookId, owner=owner), 10, 10)
    assert [h.id for h in (yield store.hooks())] == ["a1", "a2", "b1", "n1"]
    alice, bob = storage.ownedBy(ALICE), storage.ownedBy(BOB)
    assert [h.id for h in (yield store.hooks(ownedBy=alice))] == ["a1", "a2"]
    assert [h.id for h in (yield store.hooks("a.b", ownedBy=bob))] == ["b1"]
    assert (yield store.hook("b1", ownedBy=alice)) is None
    assert (yield store.hook("b1", ownedBy=bob)).id == "b1"
    assert (yield store.remove(hookId="b1", ownedBy=alice)) == []
    assert sorted((yield store.remove(key="a.b", ownedBy=alice))) == ["a1", "a2"]
    assert [h.id for h in (yield store.hooks())] == ["b1", "n1"]
    with pytest.raises(ValueError):
        yield store.remove(ownedBy=bob)


@defer.inlineCallbacks
def _call(api, method, path, principal=None, document=None, key=None):
    """
    C{method} C{/api/webhooks/<path>} on C{api} as C{principal} (none: as
    without C{--users}): the status and the JSON answer.
    """
    request = DummyRequest([part.encode() for part in path.split("/")] if path else [])
    request.method = method
    if principal is not None:
        setattr(request, REQUEST_ATTRIBUTE, principal)
    if document is not None:
        request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
        request.content = io.BytesIO(json.dumps(document).encode())
    if key is not None:
        request.args = {b"key": [key.encode()]}
    result = api.render(request)
    if result is NOT_DONE_YET:
        if not request.finished:
            yield request.notifyFinish()
        body = b"".join(request.written)
    else:
        body = result
    return request.responseCode or 200, json.loads(body)


@pytest.fixture
def api(newPool):
    registry = WebhookRegistry(newPool(), reactor, allowPrivate=True,
                               resolve=lambda host, port: defer.succeed(["127.0.0.1"]))
    return WebhooksResource(registry)


def _register(api, principal, key="deploy.event"):
    return _call(api, b"POST", "", principal,
                 document={"key": key, "url": "http://127.0.0.1:9/hook"})


@pytest_twisted.inlineCallbacks
def test_viewers_get_403_on_every_webhooks_endpoint(api):
    code, created = yield _register(api, ALICE)
    assert code == 201
    hookId = created["id"]
    for method, path, document, key in [
            (b"GET", "", None, None), (b"GET", "", None, "deploy.event"), (b"GET", hookId, None, None),
            (b"GET", f"{hookId}/deliveries", None, None), (b"POST", "", {"key": "a.b"}, None),
            (b"POST", f"{hookId}/ping", None, None), (b"DELETE", hookId, None, None),
            (b"DELETE", "", None, "deploy.event"), (b"GET", "no/such/path", None, None)]:
        code, body = yield _call(api, method, path, VIC, document, key)
        assert (code, body["error"]) == (
            403, "managing webhooks needs the operator or admin role"), (method, path)
    # Nothing changed.
    code, body = yield _call(api, b"GET", hookId, ALICE)
    assert code == 200 and body["id"] == hookId


@pytest_twisted.inlineCallbacks
def test_operators_see_ping_and_delete_only_their_own_hooks(api):
    _, alices = yield _register(api, ALICE)
    _, bobs = yield _register(api, BOB)
    _, anonymous = yield _register(api, None)
    assert (alices["owner"], bobs["owner"], anonymous["owner"]) == ("alice", "bob", None)

    code, body = yield _call(api, b"GET", "", ALICE)
    assert code == 200 and [h["id"] for h in body["webhooks"]] == [alices["id"]]
    code, body = yield _call(api, b"GET", "", ALICE, key="deploy.event")
    assert [h["id"] for h in body["webhooks"]] == [alices["id"]]
    # Another's hook is answered as if it did not exist.
    for method, path in [(b"GET", bobs["id"]), (b"GET", f"{bobs['id']}/deliveries"),
                         (b"POST", f"{bobs['id']}/ping"), (b"DELETE", bobs["id"]),
                         (b"GET", anonymous["id"])]:
        code, body = yield _call(api, method, path, ALICE)
        assert (code, body["error"]) == (404, "no such webhook"), (method, path)
    code, body = yield _call(api, b"POST", f"{alices['id']}/ping", ALICE)
    assert code == 202 and body["id"] == alices["id"]
    code, body = yield _call(api, b"GET", f"{alices['id']}/deliveries", ALICE)
    assert code == 200 and body["id"] == alices["id"]
    # Deleting by key removes only the operator's own hooks of that key.
    code, body = yield _call(api, b"DELETE", "", ALICE, key="deploy.event")
    assert (code, body) == (200, {"deleted": [alices["id"]]})
    code, body = yield _call(api, b"GET", "", BOB)
    assert [h["id"] for h in body["webhooks"]] == [bobs["id"]]
    code, body = yield _call(api, b"DELETE", bobs["id"], BOB)
    assert (code, body) == (200, {"deleted": [bobs["id"]]})


@pytest_twisted.inlineCallbacks
def test_admins_and_requests_without_users_see_and_manage_every_hook(api):
    _, alices = yield _register(api, ALICE)
    _, bobs = yield _register(api, BOB)
    _, carols = yield _register(api, CAROL)
    assert carols["owner"] == "carol"
    for principal in (CAROL, None):
        code, body = yield _call(api, b"GET", "", principal)
        assert [(h["id"], h["owner"]) for h in body["webhooks"]] == [
            (alices["id"], "alice"), (bobs["id"], "bob"), (carols["id"], "carol")]
        code, body = yield _call(api, b"GET", bobs["id"], principal)
        assert code == 200 and body["owner"] == "bob"
    code, body = yield _call(api, b"POST", f"{alices['id']}/ping", CAROL)
    assert code == 202
    code, body = yield _call(api, b"DELETE", alices["id"], CAROL)
    assert (code, body) == (200, {"deleted": [alices["id"]]})
    code, body = yield _call(api, b"DELETE", "", None, key="deploy.event")
    assert (code, sorted(body["deleted"])) == (200, sorted([bobs["id"], carols["id"]]))


@pytest.mark.parametrize("body", [b"[" * 60000, b"\xff", b"{"])
def test_a_registration_body_that_is_not_json_is_a_400(body):
    """
    Nesting too deep for the JSON decoder (under the body limit) is refused
    as any other body that is not JSON, not raised as a 500 with a traceback.
    """
    request = DummyRequest([])
    request.method = b"POST"
    setattr(request, REQUEST_ATTRIBUTE, CAROL)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
    request.content = io.BytesIO(body)
    answer = WebhooksResource(registry=None).render(request)
    assert request.responseCode == 400 and json.loads(answer)["error"] == "the body is not JSON"


ALICE_ID, NEW_ALICE_ID = "a1" * 16, "b2" * 16
# Alice, and another user given her name after she was removed.
ALICE_BOUND = Principal("alice", OPERATOR, hosts=["web-*"], userId=ALICE_ID)
NEW_ALICE = Principal("alice", OPERATOR, hosts=["web-*"], userId=NEW_ALICE_ID)


@pytest_twisted.inlineCallbacks
def test_a_registry_with_owners_gets_the_owner_id_column_and_keeps_its_hooks(newPool):
    old = newPool()
    yield old.pool.runOperation(OLD_HOOKS_TABLE)
    yield old.pool.runOperation("ALTER TABLE webhook_hooks ADD COLUMN owner TEXT")
    yield old.pool.runOperation(
        "INSERT INTO webhook_hooks VALUES ('old', 'a.b', 'http://127.0.0.1:1/', 's', 0.5, "
        "'active', NULL, NULL, NULL, NULL, 'alice')")
    assert "owner_id" not in (yield _columns(old))
    hooks = yield old.hooks()
    assert [(h.id, h.owner, h.ownerId) for h in hooks] == [("old", "alice", None)]
    assert "owner_id" in (yield _columns(old))


# Alice as she was before users had ids, then with the id resmon-users filled in.
LEGACY_ALICE = Principal("alice", OPERATOR, hosts=["web-*"])
UPGRADED_ALICE = Principal("alice", OPERATOR, hosts=["web-*"], userId=ALICE_ID, predatesIds=True)


@pytest_twisted.inlineCallbacks
def test_hooks_are_their_owners_by_name_and_id(newPool):
    store = newPool()
    for hookId, owner, ownerId in [("bound", "alice", ALICE_ID), ("legacy", "alice", None),
                                   ("bobs", "bob", None), ("none", None, None)]:
        yield store.add(storage.Hook(hookId, "a.b", "http://127.0.0.1:1/", "s", 1.0,
                                     storage.ACTIVE, owner=owner, ownerId=ownerId), 10, 10)

    @defer.inlineCallbacks
    def ids(principal):
        hooks = yield store.hooks(ownedBy=storage.ownedBy(principal))
        assert [h.id for h in hooks] == [h.id for h in (yield store.hooks())
                                         if storage.ownsHook(principal, h.owner, h.ownerId)]
        return [h.id for h in hooks]
    # Registered before ids (bound to none): the user of a file without ids,
    # or the one whose id was filled in; never a user added since.
    assert (yield ids(LEGACY_ALICE)) == ["legacy"]
    assert (yield ids(UPGRADED_ALICE)) == ["bound", "legacy"]
    assert (yield ids(ALICE_BOUND)) == ["bound"]
    assert (yield ids(NEW_ALICE)) == []
    assert (yield ids(BOB)) == ["bobs"]
    theirs = storage.ownedBy(NEW_ALICE)
    assert (yield store.hook("bound", ownedBy=theirs)) is None
    assert (yield store.hook("legacy", ownedBy=theirs)) is None
    assert (yield store.remove(key="a.b", ownedBy=theirs)) == []
    assert (yield store.hook("bound")).describe()["owner_id"] == ALICE_ID
    # A bare name is refused: it would match every id.
    with pytest.raises(TypeError):
        yield store.hooks(ownedBy="alice")


@pytest_twisted.inlineCallbacks
def test_a_user_given_a_removed_users_name_gets_none_of_their_hooks_from_the_api(api):
    code, old = yield _register(api, ALICE_BOUND)
    assert code == 201 and old["owner"] == "alice"
    code, body = yield _call(api, b"GET", "", NEW_ALICE)
    assert (code, body) == (200, {"webhooks": []})
    for method, path in [(b"GET", old["id"]), (b"GET", f"{old['id']}/deliveries"),
                         (b"POST", f"{old['id']}/ping"), (b"DELETE", old["id"])]:
        code, body = yield _call(api, method, path, NEW_ALICE)
        assert (code, body["error"]) == (404, "no such webhook"), (method, path)
    code, body = yield _call(api, b"DELETE", "", NEW_ALICE, key="deploy.event")
    assert (code, body) == (200, {"deleted": []})
    code, new = yield _register(api, NEW_ALICE)
    code, body = yield _call(api, b"GET", "", NEW_ALICE)
    assert [h["id"] for h in body["webhooks"]] == [new["id"]]
    code, body = yield _call(api, b"GET", "", ALICE_BOUND)
    assert [h["id"] for h in body["webhooks"]] == [old["id"]]
    # An admin sees both, under the one name.
    code, body = yield _call(api, b"GET", "", CAROL)
    assert [(h["id"], h["owner"], h["owner_id"]) for h in body["webhooks"]] == [
        (old["id"], "alice", ALICE_ID), (new["id"], "alice", NEW_ALICE_ID)]
