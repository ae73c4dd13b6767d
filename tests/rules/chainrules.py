"""
Drop-in rules for the rules integration tests (loaded with --rules-dir).
"""

from zope.interface import implementer

from resmon.interfaces import IRule


class _Rule:
    def configure(self, options):
        if options:
            raise ValueError(f"unknown options {sorted(options)}")


@implementer(IRule)
class Deploy(_Rule):
    """An event from the deploys source becomes a deploys.deployed event."""

    name = "deploy"
    patterns = ("*.event",)

    def check(self, event, state):
        return event.source == "deploys"

    def action(self, event, state, act):
        state["count"] = state.get("count", 0) + 1
        act.emit("deploys.deployed", {"what": event.payload, "count": state["count"]})


@implementer(IRule)
class Announce(_Rule):
    """A deployed event is announced as an announce.event."""

    name = "announce"
    patterns = ("*.deployed",)

    def check(self, event, state):
        return True

    def action(self, event, state, act):
        act.emit("announce.event", {"announced": event.payload})


@implementer(IRule)
class Ping(_Rule):
    """loop.event -> loop.pong."""

    name = "ping"
    patterns = ("loop.event",)

    def check(self, event, state):
        return True

    def action(self, event, state, act):
        act.emit("loop.pong", {"depth": event.chain.depth})


@implementer(IRule)
class Pong(_Rule):
    """loop.pong -> loop.event: with ping, a loop."""

    name = "pong"
    patterns = ("loop.pong",)

    def check(self, event, state):
        return True

    def action(self, event, state, act):
        act.emit("loop.event", {"depth": event.chain.depth})


@implementer(IRule)
class Raising(_Rule):
    """Fails on every event it checks."""

    name = "raising"
    patterns = ("#",)

    def check(self, event, state):
        return 1 / 0

    def action(self, event, state, act):
        pass


@implementer(IRule)
class AlertRelay(_Rule):
    """An event posted to /api/events/alerts becomes an alert of the host it names."""

    name = "alert-relay"
    patterns = ("alerts.event",)

    def check(self, event, state):
        return isinstance(event.payload, dict) and isinstance(event.payload.get("host"), str)

    def action(self, event, state, act):
        from resmon.topics import hostWord
        act.emit(f"{hostWord(event.payload['host'])}.alert", event.payload)


@implementer(IRule)
class NotifyRelay(_Rule):
    """An event posted to /api/events/pager notifies the user it names."""

    name = "notify-relay"
    patterns = ("pager.event",)

    def check(self, event, state):
        return isinstance(event.payload, dict) and isinstance(event.payload.get("user"), str)

    def action(self, event, state, act):
        act.notify(event.payload.get("title", "paged"), event.payload.get("text", ""),
                   user=event.payload["user"], level="warning")
