"""
Real parts for the webhook tests: an HTTP receiver on loopback
(twisted.web) whose answers a test scripts, a JSON client of the registry
API, and the signature check of docs/webhooks.md, taken from the document
itself.
"""

import json
import pathlib
import re

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.web import resource, server
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from support import withTimeout

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "webhooks.md"


def documentedVerifier():
    """
    C{verify_signature} exactly as docs/webhooks.md writes it (its first
    python block): the tests check receivers with nothing but the recipe.
    """
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1)
    namespace = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify_signature"]


class Receiver(resource.Resource):
    """
    Records every POST (path, headers, body) and answers with the next
    scripted answer of its path: a status code, C{"hang"} (never answer),
    or C{("redirect", path)}; 200 once the script is over.
    """

    isLeaf = True

    def __init__(self):
        resource.Resource.__init__(self)
        self.requests = []
        self.scripts = {}
        self.hanging = []
        self._waiters = []

    def script(self, path, *answers):
        self.scripts[path] = list(answers)

    def render_POST(self, request):
        path = request.path.decode()
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        body = request.content.read()
        answers = self.scripts.get(path) or []
        answer = answers.pop(0) if answers else 200
        self.requests.append({"path": path, "headers": headers, "body": body,
                              "json": json.loads(body), "answer": answer})
        self._check()
        if answer == "hang":
            self.hanging.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return server.NOT_DONE_YET
        if isinstance(answer, tuple):
            request.setResponseCode(302)
            request.setHeader(b"location", answer[1].encode())
            return b"moved"
        request.setResponseCode(answer)
        return b"ok"

    def on(self, path):
        return [r for r in self.requests if r["path"] == path]

    def waitFor(self, predicate, what, timeout=30):
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        self._check()
        return withTimeout(d, timeout, what)

    def _check(self):
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(self):
                self._waiters.remove(waiter)
                d.callback(None)

    def close(self):
        for request in self.hanging:
            if not request.finished and not request._disconnected:
                request.finish()


@defer.inlineCallbacks
def listen(receiver, port=0):
    """
    Serve C{receiver} on 127.0.0.1: the listening port.
    """
    site = server.Site(receiver)
    site.noisy = False
    return (yield TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(site))


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


@defer.inlineCallbacks
def api(port, method, path, document=None, contentType="application/json", token=None):
    """
    One request to the web role's API: C{(status, decoded JSON)}; with
    C{token}, as the user of that API token.
    """
    headers = Headers({b"content-type": [contentType.encode()]})
    if token is not None:
        headers.addRawHeader(b"authorization", f"Bearer {token}".encode())
    body = None if document is None else _Body(json.dumps(document).encode())
    response = yield withTimeout(Agent(reactor).request(
        method.encode(), f"http://127.0.0.1:{port}{path}".encode(), headers, body),
        15, f"{method} {path}")
    data = yield readBody(response)
    return response.code, json.loads(data) if data else None


@defer.inlineCallbacks
def until(check, what, timeout=30, interval=0.1):
    """
    Poll C{check} (returning a value or a L{Deferred} of one) until it is
    true: its value.
    """
    deadline = reactor.seconds() + timeout
    while True:
        value = yield defer.maybeDeferred(check)
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield deferLater(reactor, interval, lambda: None)


POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/"


def postgresqlAdmin():
    """
    An autocommit connection to the real PostgreSQL's database C{test}, or
    a test failure saying how to get one (never a skip).
    """
    import psycopg2
    import pytest

    try:
        admin = psycopg2.connect(POSTGRESQL + "test", connect_timeout=5)
    except psycopg2.OperationalError as e:
        pytest.fail(
            f"PostgreSQL is not reachable as {POSTGRESQL}test ({str(e).strip()}). The webhook "
            "registry tests need one on 127.0.0.1:5432 with trust authentication and a database "
            "'test': 'apt-get install -y postgresql', then see the PostgreSQL block of .ci/run, "
            "which sets it up.", pytrace=False)
    admin.autocommit = True
    return admin
