"""
A hook gets only the events its owner may receive, as the dashboard sends
that user: what an event is about (L{resmon.webhooks.owners.subjectsOf},
FQDN hosts and hostile bodies included), notifications and C{resmon.webhook}
events by whom they are for, the owner's answer by the users file as last
read; the dispatcher storing deliveries only for the hooks whose owners may
receive them (the real SQLite store), and withholding those stored before
the owner was removed or restricted; nothing for owned hooks without
C{--users}; the C{--users} option of the webhooks role, and the role
reading the file again when it changes.
"""

import json
import os

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from resmon import wire
from resmon.auth.usersfile import User, Users, writeUsers
from resmon.webhooks import store as storage
from resmon.webhooks.delivery import WebhookDispatcher
from resmon.webhooks.owners import NOBODY, HookOwner, OwnerFilter, audienceOf, subjectsOf

ALICE = User("alice", None, "operator", ("web-*",))
DORA = User("dora", None, "operator", ("db-*", "#.special"), ("dba",))
ADA = User("ada", None, "admin", ())
FLEET = User("fleet", None, "operator", ("#",))
VERA = User("vera", None, "viewer", ("#",))


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
    # A host's own word is not asked for beside its name (FQDNs).
    ("web_01_example_com.analysis", {"host": "web.01.example.com"}, ["web.01.example.com"]),
    ("web-01.analysis", {"host": "web.01"}, ["web-01", "web.01"]),
    # A body naming another host than its key: about both.
    ("web-01.measure", {"host": "db-01"}, ["web-01", "db-01"]),
    ("deploys.event", {"kind": "event", "source": "deploys"}, ["deploys"]),
    ("web-01.alert", {"kind": "alert", "payload": {"host": "web-01"}}, ["web-01"]),
    ("web_01_example_com.alert", {"payload": {"host": "web.01.example.com"}},
     ["web.01.example.com"]),
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


def may(owners, owner, routingKey, event, hookOwners=None):
    hookOwners = hookOwners or {}
    return owners.mayReceive(owner, audienceOf(routingKey, event,
                                               lambda h: hookOwners.get(h, NOBODY)))


def test_an_owner_receives_the_events_of_the_hosts_it_may_see():
    watcher = Watcher(ALICE, DORA, ADA, VERA)
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
    assert may(owners, "dora", "db-01.alert", {"payload": {"host": "web-01"}}) == "not-visible"
    # Events that are not about a host: only owners whose patterns match the source.
    assert may(owners, "alice", "deploys.event", {"source": "deploys"}) == "not-visible"
    assert may(owners, "ada", "deploys.event", {"source": "deploys"}) is None
    assert may(owners, "mallory", "web-01.measure", web) == "owner-gone"
    # A viewer may not manage webhooks: a hook left to one gets nothing.
    assert may(owners, "vera", "web-01.measure", web) == "owner-gone"
    # A name longer than any host's is nobody's to see, and is not remembered.
    long = "web-" + "x" * 300
    assert may(owners, "alice", "web-01.measure", {"host": long}) == "not-visible"
    assert long not in ALICE.principal()._seen
    # The file read again: what it says now is what counts.
    watcher.current = Users([User("alice", None, "operator", ("db-*",))])
    assert may(owners, "alice", "web-01.measure", web) == "not-visible"
    assert may(owners, "alice", "db-01.measure", {"host": "db-01"}) is None
    assert may(owners, "ada", "db-01.measure", {"host": "db-01"}) == "owner-gone"


@pytest.mark.parametrize("patterns", [["web.01.example.com"], ["web.*"], ["*.example.com"],
                                      ["web.01.*"], ["web_01_example_com"]])
def test_a_host_named_by_its_fqdn_reaches_an_owner_whose_patterns_name_it(patterns):
    owners = OwnerFilter(Watcher(User("fqdn", None, "operator", tuple(patterns))))
    for key, event in (("web_01_example_com.analysis", {"host": "web.01.example.com"}),
                       ("web_01_example_com.status", {"host": "web.01.example.com"}),
                       ("web_01_example_com.alert", {"payload": {"host": "web.01.example.com"}})):
        assert may(owners, "fqdn", key, event) is None, (patterns, key)
    if patterns != ["*.example.com"]:
        assert may(owners, "fqdn", "db_01_example_com.analysis",
                   {"host": "db.01.example.com"}) == "not-visible"


def test_notifications_reach_only_the_user_or_group_they_name():
    owners = OwnerFilter(Watcher(ALICE, DORA, ADA, FLEET))
    toDora = {"v": 1, "kind": "notification", "title": "for dora"}
    # Whatever hosts they see, admins included, others do not get it.
    for owner in ("alice", "ada", "fleet"):
        assert may(owners, owner, "user.dora.notify", toDora) == "not-visible", owner
        assert may(owners, owner, "group.dba.notify", toDora) == "not-visible", owner
    assert may(owners, "dora", "user.dora.notify", toDora) is None
    assert may(owners, "dora", "group.dba.notify", toDora) is None
    assert may(owners, "dora", "group.ops.notify", toDora) == "not-visible"
    # About a host: only if the addressee may see it.
    assert may(owners, "dora", "user.dora.notify", dict(toDora, host="web-01")) == "not-visible"
    assert may(owners, "dora", "user.dora.notify", dict(toDora, host="db-01")) is None


def test_a_webhook_event_reaches_the_owner_of_the_hook_it_names_and_admins():
    owners = OwnerFilter(Watcher(ALICE, DORA, ADA, FLEET))
    hookOwners = {"h-alice": HookOwner("alice", None), "h-none": None}
    disabled = {"v": 1, "kind": "webhook", "hook": "h-alice", "state": "disabled"}
    assert may(owners, "alice", "resmon.webhook", disabled, hookOwners) is None
    assert may(owners, "ada", "resmon.webhook", disabled, hookOwners) is None
    for owner in ("dora", "fleet"):
        assert may(owners, owner, "resmon.webhook", disabled, hookOwners) == "not-visible"
    for event in (dict(disabled, hook="h-none"), dict(disabled, hook="unknown"),
                  dict(disabled, hook=7), [1]):
        assert may(owners, "alice", "resmon.webhook", event, hookOwners) == "not-visible"


def test_without_the_users_file_owned_hooks_get_nothing():
    owners = OwnerFilter(None)
    assert may(owners, None, "web-01.measure", {"host": "web-01"}) is None
    assert may(owners, "ada", "web-01.measure", {"host": "web-01"}) == "no-users"


def _hook(hookId, key, owner):
    return storage.Hook(hookId, key, "http://127.0.0.1:1/", "secret", 1.0, storage.ACTIVE,
                        owner=owner)


class NoPoster:
    def post(self, *args, **kwargs):
        raise AssertionError("nothing is delivered: this dispatcher does not hold the lease")


def _dispatcher(tmp_path, owners, poster=None):
    pool, dialect, where = storage.openPool(None, str(tmp_path))
    store = storage.WebhookStore(pool, dialect, where)
    dispatcher = WebhookDispatcher(store, poster or NoPoster(), Clock(), lambda k, b: None,
                                   retryFor=3600, disableAfter=3600, maxBacklog=100, owners=owners)
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


class RecordingPoster:
    def __init__(self):
        self.posted = []

    def post(self, url, headers, body):
        self.posted.append(json.loads(body))
        return 200


@pytest_twisted.inlineCallbacks
def test_deliveries_stored_before_the_owner_was_restricted_or_removed_are_withheld(tmp_path):
    watcher = Watcher(ALICE, ADA)
    poster = RecordingPoster()
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(watcher), poster)
    try:
        for hook in (_hook("alice", "#", "alice"), _hook("ada", "#", "ada")):
            yield store.add(hook, 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        for n in range(3):
            yield dispatcher.eventReceived("web-01.measure", b'{"host": "web-01", "n": %d}' % n)
        # Stored while alice may see web-01; now she may not, and ada is gone.
        watcher.current = Users([User("alice", None, "operator", ("db-*",))])
        dispatcher.setDelivering(True)
        yield _until(lambda: dispatcher.counters["not-visible"] == 3
                     and dispatcher.counters["owner-gone"] == 3, "the six deliveries withheld")
        assert poster.posted == []
        assert (yield store.pendingCount("alice")) == 0 == (yield store.pendingCount("ada"))
        # A ping of her own hook, about no host, still goes out to her.
        from resmon.webhooks.registry import WebhookRegistry
        yield WebhookRegistry(store, Clock(), resolve=lambda host, port: None).ping("alice")
        dispatcher.wake("alice")
        yield _until(lambda: len(poster.posted) == 1, "the ping")
        assert poster.posted[0]["event"]["kind"] == "ping"
        # What she may see now is sent.
        yield dispatcher.eventReceived("db-01.measure", b'{"host": "db-01", "n": 9}')
        yield _until(lambda: len(poster.posted) == 2, "the new delivery")
        assert poster.posted[1]["event"]["n"] == 9
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_without_users_owned_hooks_are_stored_not_delivered_and_the_log_says_so_once(tmp_path):
    poster = RecordingPoster()
    store, bare = _dispatcher(tmp_path, None, poster)
    warnings = []

    def observer(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            warnings.append(event["log_format"])
    globalLogPublisher.addObserver(observer)
    informed = None
    try:
        yield store.add(_hook("anyone", "#", None), 10, 10)
        bare.setHooks((yield store.hooks()))
        assert warnings == []
        for hook in (_hook("ada", "#", "ada"), _hook("alice", "#", "alice")):
            yield store.add(hook, 10, 10)
        bare.setHooks((yield store.hooks()))
        bare.setHooks((yield store.hooks()))
        assert len(warnings) == 1 and "--users" in warnings[0]
        # Kept for a process that can judge: none of it is sent, nor dropped.
        for host in ("db-01", "web-01"):
            yield bare.eventReceived(f"{host}.measure", json.dumps({"host": host}).encode())
        bare.setDelivering(True)
        yield _until(lambda: len(poster.posted) == 2, "the unowned hook's deliveries")
        assert (yield store.pendingCount("ada")) == 2 == (yield store.pendingCount("alice"))
        assert set(bare.workers) == {"anyone"}
        bare.setDelivering(False)
        # A process with the users file delivers them, each to whom may see it.
        informed = WebhookDispatcher(store, poster, Clock(), lambda k, b: None, retryFor=3600,
                                     disableAfter=3600, maxBacklog=100,
                                     owners=OwnerFilter(Watcher(ALICE, ADA)))
        informed.setHooks((yield store.hooks()))
        informed.setDelivering(True)
        yield _until(lambda: len(poster.posted) == 5 and informed.counters["not-visible"] == 1,
                     "ada's two and alice's one")
        assert sorted((p["hook"], p["event"]["host"]) for p in poster.posted[2:]) == [
            ("ada", "db-01"), ("ada", "web-01"), ("alice", "web-01")]
    finally:
        globalLogPublisher.removeObserver(observer)
        yield bare.stop()
        if informed is not None:
            yield informed.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_a_notification_stored_for_an_admin_is_withheld_once_she_left_its_group(tmp_path):
    ada = User("ada", None, "admin", (), ("dba",))
    watcher = Watcher(ada)
    poster = RecordingPoster()
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(watcher), poster)
    try:
        yield store.add(_hook("ada", "#", "ada"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        notification = {"v": 1, "kind": "notification", "title": "for the dbas"}
        yield dispatcher.eventReceived("group.dba.notify", json.dumps(notification).encode())
        assert (yield store.pendingCount("ada")) == 1
        watcher.current = Users([User("ada", None, "admin", (), ())])
        dispatcher.setDelivering(True)
        yield _until(lambda: dispatcher.counters["not-visible"] == 1, "the notification withheld")
        assert poster.posted == [] and (yield store.pendingCount("ada")) == 0
    finally:
        yield dispatcher.stop()
        store.close()


def _until(predicate, what, timeout=10):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    @defer.inlineCallbacks
    def wait():
        deadline = reactor.seconds() + timeout
        while not predicate():
            assert reactor.seconds() < deadline, f"timed out waiting for {what}"
            yield deferLater(reactor, 0.01, lambda: None)
    return wait()


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


@pytest_twisted.inlineCallbacks
def test_a_bus_event_under_resmon_ping_is_not_taken_for_a_test_delivery(tmp_path):
    poster = RecordingPoster()
    store, bare = _dispatcher(tmp_path, None)
    informed = WebhookDispatcher(store, poster, Clock(), lambda k, b: None, retryFor=3600,
                                 disableAfter=3600, maxBacklog=100,
                                 owners=OwnerFilter(Watcher(ALICE)))
    try:
        yield store.add(_hook("alice", "#", "alice"), 10, 10)
        bare.setHooks((yield store.hooks()))
        informed.setHooks((yield store.hooks()))
        # Stored unjudged by a process without the users file.
        yield bare.eventReceived("resmon.ping", json.dumps(
            {"v": 1, "kind": "ping", "ts": 1.0, "host": "db-01", "payload": {"cpu": 99}}).encode())
        from resmon.webhooks.registry import WebhookRegistry
        yield WebhookRegistry(store, Clock(), resolve=lambda host, port: None).ping("alice")
        informed.setDelivering(True)
        yield _until(lambda: len(poster.posted) == 1 and informed.counters["not-visible"] == 1,
                     "the real ping sent, the bus's withheld")
        assert poster.posted[0]["event"].keys() == {"v", "kind", "ts"}
    finally:
        yield bare.stop()
        yield informed.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_a_hook_at_its_backlog_cap_does_not_warn_at_every_event(tmp_path):
    store, dispatcher = _dispatcher(tmp_path, None)
    dispatcher.maxBacklog = 3
    warnings = []

    def observer(event):
        if "backlog over" in event.get("log_format", ""):
            warnings.append(event)
    globalLogPublisher.addObserver(observer)
    try:
        yield store.add(_hook("ada", "#", "ada"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        for n in range(50):
            yield dispatcher.eventReceived("web-01.measure", b'{"host": "web-01", "n": %d}' % n)
        assert dispatcher.counters["dropped-backlog"] == 47
        assert len(warnings) <= 11
    finally:
        globalLogPublisher.removeObserver(observer)
        yield dispatcher.stop()
        store.close()


OLD_ID, NEW_ID = "0a" * 16, "0b" * 16


def _boundHook(hookId, key, owner, ownerId):
    return storage.Hook(hookId, key, "http://127.0.0.1:1/", "secret", 1.0, storage.ACTIVE,
                        owner=owner, ownerId=ownerId)


@pytest_twisted.inlineCallbacks
def test_a_hook_of_a_removed_user_gets_nothing_when_another_user_takes_the_name(tmp_path):
    """
    Alice registered a hook before users had ids (bound to none) and one
    after (bound to OLD_ID, filled in for her then), was removed, and
    another user was added as alice (NEW_ID): both hooks' owner is gone,
    for events received and for deliveries stored before; only the new
    alice's hook gets what she may see.
    """
    oldAlice = User("alice", None, "operator", ("#",), id=OLD_ID, predatesIds=True)
    watcher = Watcher(oldAlice, ADA)
    poster = RecordingPoster()
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(watcher), poster)
    try:
        for hook in (_boundHook("old", "#", "alice", OLD_ID),
                     _boundHook("legacy", "#", "alice", None)):
            yield store.add(hook, 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        yield dispatcher.eventReceived("web-01.measure", b'{"host": "web-01", "n": 1}')
        assert (yield store.pendingCount("old")) == 1 == (yield store.pendingCount("legacy"))
        # Alice removed, and another alice added (same name, same hosts).
        watcher.current = Users([User("alice", None, "operator", ("#",), id=NEW_ID), ADA])
        yield store.add(_boundHook("new", "#", "alice", NEW_ID), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        yield dispatcher.eventReceived("web-01.measure", b'{"host": "web-01", "n": 2}')
        assert dispatcher.counters["owner-gone"] == 2
        assert (yield store.pendingCount("old")) == 1 == (yield store.pendingCount("legacy"))
        dispatcher.setDelivering(True)
        yield _until(lambda: dispatcher.counters["owner-gone"] == 4, "the old deliveries withheld")
        yield _until(lambda: len(poster.posted) == 1, "the new alice's delivery")
        assert [p["hook"] + str(p["event"]["n"]) for p in poster.posted] == ["new2"]
        assert (yield store.pendingCount("old")) == 0 == (yield store.pendingCount("legacy"))
    finally:
        yield dispatcher.stop()
        store.close()


def test_a_webhook_event_about_a_removed_users_hook_is_not_for_the_new_user_of_the_name():
    newAlice = User("alice", None, "operator", ("web-*",), id=NEW_ID)
    owners = OwnerFilter(Watcher(newAlice, ADA))
    hookOwners = {"h-old": HookOwner("alice", OLD_ID), "h-new": HookOwner("alice", NEW_ID),
                  "h-legacy": HookOwner("alice", None)}
    disabled = {"v": 1, "kind": "webhook", "hook": "h-old", "state": "disabled"}

    def audience(hookId):
        return audienceOf("resmon.webhook", dict(disabled, hook=hookId),
                          lambda h: hookOwners.get(h, NOBODY))
    assert owners.mayReceive("alice", audience("h-old"), NEW_ID) == "not-visible"
    assert owners.mayReceive("alice", audience("h-legacy"), NEW_ID) == "not-visible"
    assert owners.mayReceive("alice", audience("h-new"), NEW_ID) is None
    # The removed alice's hooks, bound to her id or to none: their owner is gone.
    assert owners.mayReceive("alice", audience("h-old"), OLD_ID) == "owner-gone"
    assert owners.mayReceive("alice", audience("h-legacy"), None) == "owner-gone"
    assert owners.mayReceive("ada", audience("h-old")) is None
    # Had alice's id been filled in when ids came, the hook bound to none is hers.
    upgraded = OwnerFilter(Watcher(User("alice", None, "operator", ("web-*",), id=OLD_ID,
                                        predatesIds=True)))
    assert upgraded.mayReceive("alice", audience("h-legacy"), None) is None
    assert upgraded.mayReceive("alice", audience("h-legacy"), OLD_ID) is None
    assert upgraded.mayReceive("alice", audience("h-new"), OLD_ID) == "not-visible"


@pytest_twisted.inlineCallbacks
def test_a_webhook_event_about_a_removed_users_hook_reaches_none_of_the_new_users_hooks(tmp_path):
    """
    Through the dispatcher: a resmon.webhook event about the removed
    alice's hook (its URL in it) is not stored for the new alice's hook.
    """
    watcher = Watcher(User("alice", None, "operator", ("web-*",), id=NEW_ID), ADA)
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(watcher))
    try:
        yield store.add(_boundHook("old", "a.b", "alice", OLD_ID), 10, 10)
        yield store.add(_boundHook("listener", "resmon.webhook", "alice", NEW_ID), 10, 10)
        yield store.add(_boundHook("admin", "resmon.webhook", "ada", None), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        yield dispatcher.eventReceived("resmon.webhook", json.dumps(
            {"v": 1, "kind": "webhook", "hook": "old", "url": "http://old.example/",
             "state": "disabled"}).encode())
        assert (yield store.pendingCount("listener")) == 0
        assert (yield store.pendingCount("admin")) == 1
        assert dispatcher.counters["not-visible"] == 1
        # An event about her own hook reaches her.
        yield dispatcher.eventReceived("resmon.webhook", json.dumps(
            {"v": 1, "kind": "webhook", "hook": "listener", "state": "disabled"}).encode())
        assert (yield store.pendingCount("listener")) == 1
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_a_delivery_stored_for_a_removed_admin_is_withheld_from_the_next_of_the_name(tmp_path):
    poster = RecordingPoster()
    watcher = Watcher(User("ada", None, "admin", (), id=OLD_ID))
    store, dispatcher = _dispatcher(tmp_path, OwnerFilter(watcher), poster)
    try:
        yield store.add(_boundHook("adas", "#", "ada", OLD_ID), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        yield dispatcher.eventReceived("web-01.measure", b'{"host": "web-01"}')
        assert (yield store.pendingCount("adas")) == 1
        # Another admin added as ada, who sees every host.
        watcher.current = Users([User("ada", None, "admin", (), id=NEW_ID)])
        dispatcher.setDelivering(True)
        yield _until(lambda: dispatcher.counters["owner-gone"] == 1, "the delivery withheld")
        assert poster.posted == [] and (yield store.pendingCount("adas")) == 0
    finally:
        yield dispatcher.stop()
        store.close()
