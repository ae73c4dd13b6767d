"""
What the benchmarks share: the tests' helpers on the import path (the
benchmarks drive the same real processes as the integration tests), the
command line's C{--broker}, and L{Rig}.
"""

import argparse
import os
import sys

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import (  # noqa: E402
    PlainAMQPClient, TwistdProcess, brokerUnreachableReason, brokerURL, freePort, uniqueName)


def argumentParser(doc, **options):
    """
    A parser described by the first line of a benchmark's C{doc}, with
    C{--broker} and an option for each keyword: C{stall_timeout=6.0} is
    C{--stall-timeout}, a float defaulting to 6.0.
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--broker", default=brokerURL())
    for name, default in options.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return parser


class Rig:
    """
    A benchmark's own exchange on the real broker, a plain AMQP client on
    it, and the C{twistd resmon} processes started on it; L{stop} stops them
    and deletes the exchange and the queues named through L{queue}.
    """

    def __init__(self, broker):
        self.broker = broker
        self.exchange = uniqueName("resmon.bench")
        self.amqp = None
        self._exchanges = [self.exchange]
        self._queues = []
        self._processes = []

    @classmethod
    @defer.inlineCallbacks
    def connect(cls, broker):
        """
        Connect to C{broker} (or exit saying why not) and declare the
        exchange.

        @return: a Deferred of the L{Rig}.
        """
        reason = brokerUnreachableReason(broker)
        if reason:
            raise SystemExit(reason)
        rig = cls(broker)
        rig.amqp = yield PlainAMQPClient(broker).connect()
        yield rig.amqp.declareExchange(rig.exchange)
        return rig

    def queue(self, prefix, derived=(), exchange=False):
        """
        A unique queue name, deleted at the end with the queues named after
        it with each suffix of C{derived} (and the exchange of its name if
        C{exchange}, as a dead-letter queue has).
        """
        name = uniqueName(prefix)
        self._queues += [name] + [name + suffix for suffix in derived]
        if exchange:
            self._exchanges.append(name)
        return name

    def deleteExchangeAtEnd(self, name):
        """
        Delete the exchange C{name} (one a resmon process declares) at the end.
        """
        self._exchanges.append(name)

    def start(self, label, role, *args):
        """
        Start C{twistd resmon --role=<role>} on this broker and exchange.
        """
        process = TwistdProcess(label, [f"--role={role}", f"--broker={self.broker}",
                                        f"--exchange={self.exchange}", *args]).start()
        self._processes.append(process)
        return process

    @defer.inlineCallbacks
    def startListening(self, label, role, *args, ready=b"consuming #.analysis"):
        """
        L{start} a role with a dashboard on a free local port, and wait
        until it logs C{ready}.

        @return: a Deferred of the process and its port.
        """
        port = freePort()
        process = self.start(label, role, f"--port={port}", "--interface=127.0.0.1", *args)
        yield process.waitForOutput(ready, timeout=30)
        return process, port

    @defer.inlineCallbacks
    def stop(self):
        for process in reversed(self._processes):
            yield process.stop()
        yield self.amqp.cleanUp(exchanges=self._exchanges, queues=self._queues)
        yield self.amqp.close()


def runBenchmark(main, parser):
    """
    Parse the command line, connect a L{Rig} to C{--broker}, run
    C{main(reactor, arguments, rig)} (a Deferred) and stop the rig however
    it ends.
    """
    @defer.inlineCallbacks
    def run(reactor, arguments):
        rig = yield Rig.connect(arguments.broker)
        try:
            yield main(reactor, arguments, rig)
        finally:
            yield rig.stop()
    task.react(run, (parser.parse_args(),))
