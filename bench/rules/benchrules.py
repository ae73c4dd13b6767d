"""
Drop-in rules for bench/rules_throughput.py and bench/rules_latency.py
(loaded with --rules-dir): nine rules that look at every event and decline,
one that marks the first and last event of a run, one that echoes.
"""

from zope.interface import implementer

from resmon.interfaces import IRule


class _Rule:
    patterns = ("*.event",)

    def configure(self, options):
        pass

    def action(self, event, state, act):
        pass


def _declining(number):
    @implementer(IRule)
    class Declining(_Rule):
        """Looks at every event's payload and declines."""

        name = f"decline-{number}"

        def check(self, event, state):
            state["seen"] = state.get("seen", 0) + 1
            return isinstance(event.payload, dict) and event.payload.get("rule") == self.name
    return Declining


Decline1, Decline2, Decline3, Decline4, Decline5, Decline6, Decline7, Decline8, Decline9 = (
    _declining(n) for n in range(1, 10))


@implementer(IRule)
class Mark(_Rule):
    """Emits bench.mark with the time of the first and the last event of a run."""

    name = "mark"

    def check(self, event, state):
        payload = event.payload
        return isinstance(payload, dict) and payload.get("seq") in (0, payload.get("last"))

    def action(self, event, state, act):
        act.emit("bench.mark", {"seq": event.payload["seq"], "at": act.now()})


@implementer(IRule)
class Echo(_Rule):
    """Echoes bench.event as echo.event."""

    name = "echo"
    patterns = ("bench.event",)

    def check(self, event, state):
        return True

    def action(self, event, state, act):
        act.emit("echo.event", event.payload)
