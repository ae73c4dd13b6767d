"""
The webhook receiver of bench/webhook_throughput.py, in a process of its
own so that its CPU is not the webhooks process's nor the publisher's: a
twisted.web site on 127.0.0.1 that answers every POST 200 and, once it has
received the number of distinct deliveries (event and hook) it was told,
writes what it saw as JSON and exits.

Usage: python bench/webhook_receiver.py EXPECTED RESULTS_FILE
Prints C{listening on PORT} once it listens. In the results: C{received},
a list of C{[arrival, sent, seq, hook]} (arrival and the event's C{sent},
epoch seconds; C{hook} is the query of the hook's URL), and C{cpu}, the
seconds of CPU this process used.
"""

import json
import os
import re
import sys
import time

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

# The event's "sent" and "seq", without parsing the whole body.
SENT = re.compile(rb'"sent": ?([0-9.e+]+)')
SEQ = re.compile(rb'"seq": ?([0-9]+)')


class Counting(resource.Resource):
    isLeaf = True

    def __init__(self, expected, results):
        resource.Resource.__init__(self)
        self.expected = expected
        self.results = results
        self.received = []
        self.distinct = set()

    def render_POST(self, request):
        now = time.time()
        body = request.content.read()
        seq, hook = int(SEQ.search(body).group(1)), request.uri.split(b"?")[-1].decode()
        self.received.append((now, float(SENT.search(body).group(1)), seq, hook))
        self.distinct.add((seq, hook))
        if len(self.distinct) == self.expected and len(self.received) >= self.expected:
            self.expected = None
            reactor.callLater(0.2, self.finish)
        return b""

    def finish(self):
        usage = os.times()
        with open(self.results, "w") as f:
            json.dump({"received": self.received, "cpu": usage.user + usage.system}, f)
        reactor.stop()


def main(expected, results):
    site = server.Site(Counting(int(expected), results))
    site.noisy = False
    site.log = lambda request: None  # no access log: it would cost more than answering

    def listening(port):
        print(f"listening on {port.getHost().port}", flush=True)
    TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site).addCallback(listening)
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:])
