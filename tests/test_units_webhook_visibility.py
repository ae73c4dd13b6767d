"""
A hook gets only the events of hosts its owner may see: what an event is
about (L{resmon.webhooks.owners.subjectsOf}, hostile bodies included), the
owner's answer by the users file as last read, and the dispatcher storing
deliveries only for the hooks whose owners may receive them (the real
SQLite store), counting the others; the C{--users} option of the webhooks
role, and the role reading the file again when it changes.
"""

import json
import os

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from resmon import wire
from resmon.auth.usersfile import User, Users, writeUsers
from resmon.webhooks import store as storage
from resmon.webhooks.delivery import WebhookDispatcher
from resmon.webhooks.owners import OwnerFilter, subjectsOf

ALICE = User("alice", None, "operator", ("web-*",))
DORA = User("dora", None, "operator", ("db-*", "#.special"))
ADA = User("ada", None, "admin", ())


class Watcher:
    """
    What L{OwnerFilter} reads of a L{resmon.auth.service.UsersFileWatcher}.
    """

    def __init__(self, *users):
        self.current = Users(users)
        self.polls = 0

    def poll(self):
        self.polls += 1


@pytest.mark.parametrize("key, event, subjects", [
    ("web-01.measure", {"host": "web-01", "metrics": {}}, ["web-01"]),
    ("web-01.analysis", {"host": "web.01"}, ["web-01", "web.01"]),
    # A body naming another host than its key: about both.
    ("web-01.measure", {"host": "db-01"}, ["web-01", "db-01"]),
    ("deploys.event", {"kind": "event", "source": "deploys"}, ["deploys"]),
    ("web-01.alert", {"kind": "alert", "payload": {"host": "web-01"}}, ["web-01"]),
    ("web-01.alert", {"kind": "alert", "payload": {"host": "db-01"}}, ["web-01", "web-01\x00db-01"]),
    ("checks.alert", {"kind": "alert", "payload": {"host": "web-01"}}, ["checks", "checks\x00web-01"]),
    # Whatever a body holds, the key's word is there, and nothing raises.
    ("web-01.measure", {"host": 7}, ["web-01"]),
    ("web-01.measure", {"host": ""}, ["web-01"]),
    ("web-01.alert", {"payload": ["db-01"]}, ["web-01"]),
    ("web-01.alert", {"payload": {"host": {"x": 1}}}, ["web-01"]),
    ("web-01.measure", [1, 2], ["web-01"]),
    ("web-01.measure", None, ["web-01"]),
    ("web-01.measure", "db-01", ["web-01"]),
])
def test_what_an_event_is_about(key, event, subjects):
    assert subjectsOf(key, event) == subjects


def may(owners, owner, routingKey, event):
    return owners.mayReceive(owner, subjectsOf(routingKey, event))


def test_an_owner_receives_the_events_of_the_hosts_it_may_see():
    watcher = Watcher(ALICE, DORA, ADA)
    owners = OwnerFilter(watcher)
    web = {"host": "web-01"}
    assert may(owners, None, "db-01.measure", {"host": "db-01"}) is None
    assert may(owners, "ada", "db-01.measure", {"host": "db-01"}) is None
    assert may(owners, "alice", "web-01.measure", web) is None
    assert may(owners, "alice", "db-01.measure", {"host": "db-01"}) == "not-visible"
    # A forged body under a visible key, or a visible host under another key.
    assert may(owners, "alice", "web-01.measure", {"host": "db-01"}) == "not-visible"
    assert may(owners, "alice", "db-01.measure", web) == "not-visible"
    assert may(owners, "dora", "db-01.alert", {"payload": {"host": "db-01"}}) is None
    assert may(owners, "dora", "db-01.alert", {"payload": {"host": "web-01"}}) == (
        "not-visible")
    # Events that are not about a host: only owners whose patterns match the source.
    assert may(owners, "alice", "deploys.event", {"source": "deploys"}) == "not-visible"
    assert may(owners, "ada", "deploys.event", {"source": "deploys"}) is None
    assert may(owners, "mallory", "web-01.measure", web) == "owner-gone"
    # The file read again: what it says now is what counts.
    watcher.current = Users([User("alice", None, "operator", ("db-*",))])
    assert may(owners, "alice", "web-01.measure", web) == "not-visible"
    assert may(owners, "alice", "db-01.measure", {"host": "db-01"}) is None
    assert may(owners, "ada", "db-01.measure", {"host": "db-01"}) == "owner-gone"


def _hook(hookId, key, owner):
    return storage.Hook(hookId, key, "http://127.0.0.1:1/", "secret", 1.0, storage.ACTIVE,
                        owner=owner)


class NoPoster:
    def post(self, *args, **kwargs):
        raise AssertionError("nothing is delivered: this dispatcher does not hold the lease")


def _dispatcher(tmp_path, owners):
    pool, dialect, where = storage.openPool(None, str(tmp_path))
    store = storage.WebhookStore(pool, dialect, where)
    dispatcher = WebhookDispatcher(store, NoPoster(), Clock(), lambda k, b: None, retryFor=3600,
                                   disableAfter=3600, maxBacklog=100, owners=owners)
    return store, dispatcher


@pytest_twisted.inlineCallbacks
def test_deliveries_are_stored_only_for_hooks_whose_owners_may_see_the_host(tmp_path):
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(Watcher(ALICE, ADA)))
    try:
        for hook in (_hook("anyone", "#", None), _hook("alice", "#", "alice"),
                     _hook("ada", "#", "ada"), _hook("gone", "#", "mallory")):
            yield store.add(hook, 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        for key, host in (("web-01.measure", "web-01"), ("db-01.measure", "db-01"),
                          ("web-02.measure", "db-02")):
            yield dispatcher.eventReceived(key, json.dumps({"host": host}).encode())
        # A body that is not JSON is rejected before any owner is asked.
        assert dispatcher.eventReceived("web-01.measure", b"{nope") is None

        def hosts(hookId):
            return store.pending(hookId, 100).addCallback(
                lambda rows: [wire.loadJSON(row.body)["event"]["host"] for row in rows])
        assert (yield hosts("anyone")) == ["web-01", "db-01", "db-02"]
        assert (yield hosts("ada")) == ["web-01", "db-01", "db-02"]
        assert (yield hosts("alice")) == ["web-01"]
        assert (yield hosts("gone")) == []
        assert dispatcher.counters["not-visible"] == 2
        assert dispatcher.counters["owner-gone"] == 3
        assert dispatcher.counters["stored"] == 7
        assert sum(dispatcher.rejected.values()) == 1
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_an_event_no_owner_may_see_is_acknowledged_without_a_transaction(tmp_path):
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(Watcher(ALICE)))
    try:
        yield store.add(_hook("alice", "*.measure", "alice"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        assert dispatcher.eventReceived("db-01.measure", b'{"host": "db-01"}') is None
        assert (yield store.pendingCount("alice")) == 0
        assert dispatcher.counters["not-visible"] == 1
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_without_users_owned_hooks_get_everything_and_the_log_says_so_once(tmp_path):
    store, dispatcher = _dispatcher(tmp_path, None)
    warnings = []

    def observer(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            warnings.append(event["log_format"])
    globalLogPublisher.addObserver(observer)
    try:
        yield store.add(_hook("anyone", "#", None), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        assert warnings == []
        yield store.add(_hook("alice", "#", "alice"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        dispatcher.setHooks((yield store.hooks()))
        assert len(warnings) == 1 and "--users" in warnings[0]
        yield dispatcher.eventReceived("db-01.measure", b'{"host": "db-01"}')
        assert (yield store.pendingCount("alice")) == 1
    finally:
        globalLogPublisher.removeObserver(observer)
        yield dispatcher.stop()
        store.close()


def test_the_webhooks_role_takes_users_and_the_agent_does_not(tmp_path):
    from resmon import tap
    path = os.path.join(str(tmp_path), "users.toml")
    writeUsers(path, Users([ALICE]))
    options = tap.Options()
    options.parseOptions(["--role=webhooks", f"--users={path}"])
    assert options["users"] == path
    with pytest.raises(SystemExit) as refused:
        tap.Options().parseOptions(["--role=agent", f"--users={path}"])
    assert "error: --users: means nothing for --role=agent" in str(refused.value)
    assert "webhooks' delivery (webhooks, server, standalone)" in str(refused.value)
    with pytest.raises(SystemExit) as missing:
        tap.Options().parseOptions(["--role=webhooks", f"--users={path}.missing"])
    assert "error: --users:" in str(missing.value)


def test_the_webhooks_role_reads_its_users_file_again_at_each_look(tmp_path):
    from resmon.services.webhooks import WebhooksService

    watcher = Watcher(ALICE)

    class Dispatcher:
        delivering = False

    service = WebhooksService(None, None, Dispatcher(), Clock(), "q", usersWatcher=watcher)
    service._polling = object()  # a look at the registry already under way
    service.poll()
    service.poll()
    assert watcher.polls == 2


def test_a_server_filters_by_its_web_roles_users_and_a_webhooks_role_by_its_own(tmp_path):
    from twisted.application import service

    from resmon.auth.service import UsersFileWatcher
    from resmon.services.webhooks import _usersWatcher
    path = os.path.join(str(tmp_path), "users.toml")
    writeUsers(path, Users([ALICE]))

    web = service.MultiService()
    users = service.Service()
    users.setName("users")
    users.watcher = Watcher(ALICE)
    users.setServiceParent(web)
    assert _usersWatcher({"users": path}, web) == (users.watcher, False)
    own, isOwn = _usersWatcher({"users": path}, None)
    assert isinstance(own, UsersFileWatcher) and isOwn and own.current.get("alice") is not None
    assert _usersWatcher({"users": None}, service.MultiService()) == (None, False)
