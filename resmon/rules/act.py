"""
What a rule's action may do: L{Act} collects its effects, done by the
engine once the action has returned in its budget. Each kind of effect
(C{emit}, C{notify}; calling webhooks later) is one method
here and one effector in the engine.
"""

from dataclasses import dataclass

from zope.interface import implementer

from resmon import wire
from resmon.interfaces import IAct


@dataclass(frozen=True)
class Effect:
    """
    One thing an action asked for: C{kind} (C{"emit"}) and its arguments.
    """

    kind: str
    arguments: dict


class ActionError(ValueError):
    """
    An action asked for something it may not (an invalid routing key, a
    payload JSON cannot carry): the action fails as if it raised.
    """


@implementer(IAct)
class Act:
    """
    The C{act} of one action call: collects L{effects}.

    @param clock: an L{IReactorTime}, for L{now}.
    @param maxEffects: the most effects one call may ask for.
    """

    def __init__(self, clock, maxEffects=100):
        self._clock = clock
        self.maxEffects = maxEffects
        self.effects = []

    def _add(self, kind, **arguments):
        if len(self.effects) >= self.maxEffects:
            raise ActionError(f"more than {self.maxEffects} effects in one action")
        self.effects.append(Effect(kind, arguments))

    def emit(self, key, payload):
        try:
            wire.checkEmittedKey(key)
        except wire.Rejected as e:
            raise ActionError(f"emit: {e.detail}") from None
        try:
            wire.encodeJSON(payload)
        except (TypeError, ValueError) as e:
            raise ActionError(f"emit: the payload is not JSON: {e}") from None
        self._add("emit", key=key, payload=payload)

    def notify(self, title, text="", user=None, group=None, level="info", host=None):
        request = {"title": title, "text": text, "level": level}
        if user is not None:
            request["user"] = user
        if group is not None:
            request["group"] = group
        if host is not None:
            request["host"] = host
        try:
            # Checked now as POST /api/notify checks it, so a bad call fails the action.
            notification = wire.decodeNotifyRequest(wire.encodeJSON(request), 0.0, "-")
        except (wire.Rejected, TypeError, ValueError) as e:
            raise ActionError(f"notify: {getattr(e, 'detail', e)}") from None
        self._add("notify", notification=notification)

    def now(self):
        return self._clock.seconds()
