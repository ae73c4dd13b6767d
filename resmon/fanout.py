"""
Fan-out of events from the bus to every connected client, with the latest
analysis of each host kept for clients that connect later.
"""

import json
from collections import Counter

from twisted.logger import Logger

from resmon import wire

DEFAULT_STALL_TIMEOUT = 30.0


class LatestAnalyses:
    """
    The latest analysis of every host seen, as decoded documents and as the
    bytes received (so they are sent without encoding them again).
    """

    def __init__(self):
        self._documents = {}
        self._bodies = {}

    def isDuplicate(self, document):
        """
        Whether C{document} repeats the latest analysis of its host: a measure
        redelivered after a reconnect is analysed, and published, twice.
        """
        latest = self._documents.get(document["host"])
        return (
            latest is not None and document.get("seq") is not None
            and latest.get("seq") == document.get("seq") and latest.get("ts") == document.get("ts")
        )

    def update(self, document, body):
        self._documents[document["host"]] = document
        self._bodies[document["host"]] = body

    def hosts(self):
        return sorted(self._documents)

    def get(self, host):
        return self._documents.get(host)

    def documents(self):
        return [self._documents[host] for host in self.hosts()]

    def snapshotBody(self):
        """
        The snapshot message a new client gets first: every latest analysis.
        """
        return b'{"kind":"snapshot","events":[' + b",".join(
            self._bodies[host] for host in self.hosts()) + b"]}"


class ClientFlow:
    """
    Flow control for one client: an L{IPushProducer} registered on the
    client's transport. While the transport's buffer is full, only the
    latest event per host is kept (bounded by the number of hosts); a client
    paused for longer than C{stallTimeout} seconds is disconnected.

    @param send: sends one message (bytes) to the client.
    @param disconnect: drops the client.
    """

    log = Logger()

    def __init__(self, send, disconnect, clock, stallTimeout=DEFAULT_STALL_TIMEOUT):
        self._send = send
        self._disconnect = disconnect
        self._clock = clock
        self.stallTimeout = stallTimeout
        self.paused = False
        self.pending = {}
        self.coalesced = 0
        self._stallCall = None

    def send(self, key, body):
        if self.paused:
            if key in self.pending:
                self.coalesced += 1
            self.pending[key] = body
        else:
            self._send(body)

    # IPushProducer

    def pauseProducing(self):
        if self.paused:
            return
        self.paused = True
        self._stallCall = self._clock.callLater(self.stallTimeout, self._stalled)

    def resumeProducing(self):
        if not self.paused:
            return
        self.paused = False
        self._cancelStall()
        pending, self.pending = self.pending, {}
        for body in pending.values():
            self._send(body)

    def stopProducing(self):
        self._cancelStall()
        self.pending = {}

    def _cancelStall(self):
        if self._stallCall is not None and self._stallCall.active():
            self._stallCall.cancel()
        self._stallCall = None

    def _stalled(self):
        self._stallCall = None
        self.log.warn("client stopped reading for {timeout} s ({pending} updates held back); disconnecting it",
                      timeout=self.stallTimeout, pending=len(self.pending))
        self.pending = {}
        self._disconnect()


class EventFanout:
    """
    Receives events from the bus (a handler for L{IBus.subscribe}) and sends
    each to every attached client; keeps the latest analysis per host.

    A client is anything with C{sendEvent(key, body)} (see L{ClientFlow}).
    """

    log = Logger()

    def __init__(self, latest=None, maxBody=wire.DEFAULT_MAX_BODY):
        self.latest = latest if latest is not None else LatestAnalyses()
        self.maxBody = maxBody
        self.clients = set()
        self.rejected = Counter()
        self.counters = {"received": 0, "duplicates": 0, "sent": 0}

    def attach(self, client):
        self.clients.add(client)

    def detach(self, client):
        self.clients.discard(client)

    def eventReceived(self, routingKey, body):
        try:
            document = wire.decodeEvent(routingKey, body, self.maxBody)
        except wire.Rejected as e:
            self.rejected[e.reason] += 1
            self.log.warn("rejected an event under {routingKey}: {reason}",
                          routingKey=routingKey[:80], reason=str(e)[:200])
            return
        self.counters["received"] += 1
        if document["kind"] == "analysis":
            if self.latest.isDuplicate(document):
                self.counters["duplicates"] += 1
                return
            self.latest.update(document, body)
        for client in list(self.clients):
            client.sendEvent(document, body)
            self.counters["sent"] += 1


def encodeJSON(document):
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
