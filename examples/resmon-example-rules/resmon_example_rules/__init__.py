"""
An example resmon rule: alerts page someone, except right after a deploy.

A deploy tool posts C{{"deploy": "<version>"}} to
C{/api/events/<host>} when it deploys a host; for the C{mute} seconds that
follow (default 600) the host's firing alerts are expected noise. Every
other firing alert becomes a C{<host>.page} event, for whatever pages
people (a later rule, a webhook).
"""

from zope.interface import implementer

from resmon.interfaces import IRule


@implementer(IRule)
class PageUnlessDeploying:
    """Pages on firing alerts, except for a while after a deploy of the host."""

    name = "page-unless-deploying"
    # A host's deploys (<host>.event) and alerts (<host>.alert) share a
    # source, so they share this rule's state.
    patterns = ("*.event", "*.alert")

    def __init__(self):
        self.mute = 600.0

    def configure(self, options):
        options = dict(options)
        if "mute" in options:
            text = options.pop("mute")
            try:
                self.mute = float(text)
            except ValueError:
                raise ValueError(f"mute: expected seconds, not {text!r}")
            if not 0 <= self.mute <= 86400:
                raise ValueError(f"mute: must be between 0 and 86400 seconds, not {text!r}")
        if options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(options))}; the only one is mute")

    def check(self, event, state):
        payload = event.payload
        if not isinstance(payload, dict):
            return False
        if event.kind == "event":
            return isinstance(payload.get("deploy"), str)
        return event.kind == "alert" and payload.get("state") == "firing"

    def action(self, event, state, act):
        now = act.now()
        if event.kind == "event":
            state["muted_until"] = now + self.mute
            state["version"] = event.payload["deploy"]
            act.emit(f"{event.source}.muted", {
                "until": state["muted_until"], "version": state["version"]})
            return
        if now < state.get("muted_until", 0):
            state["muted"] = state.get("muted", 0) + 1
            return
        act.emit(f"{event.source}.page", {"alert": event.payload})
