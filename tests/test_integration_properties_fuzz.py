"""
Hypothesis fuzzing of AMQP properties and header tables on the real broker,
against one long-lived real C{--role=server}: generated property sets (every
property, odd values, invalid UTF-8) and header tables (every field type,
nesting, thousands of entries) on measures for the analyzer and liveness
queues, and on status events for the web role. After each, a new host's
good measure is analyzed, judged online and reaches a WebSocket client; at
the end exactly the messages a model of the bounds says to refuse were
rejected and dead-lettered, every other one went through, and the process
never reconnected.
"""

import json
import struct
from decimal import Decimal

import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqpfields import Field, contentHeader, nestedTable
from resmon.bus.properties import (
    DEFAULT_MAX_PROPERTIES_BYTES,
    DEFAULT_MAX_TABLE_DEPTH,
    DEFAULT_MAX_TABLE_FIELDS,
)
from test_integration_properties import Server, goodMeasure

EXAMPLES = 80


def _fixed(kind, low, high):
    return st.integers(low, high).map(lambda v: Field(kind, v))


SCALARS = st.one_of(
    _fixed("b", -128, 127), _fixed("B", 0, 255), _fixed("s", -2 ** 15, 2 ** 15 - 1),
    _fixed("u", 0, 2 ** 16 - 1), _fixed("I", -2 ** 31, 2 ** 31 - 1), _fixed("i", 0, 2 ** 32 - 1),
    _fixed("l", -2 ** 63, 2 ** 63 - 1), _fixed("L", 0, 2 ** 64 - 1), _fixed("T", 0, 2 ** 64 - 1),
    # RabbitMQ (Erlang) refuses NaN and infinities in a header with INTERNAL_ERROR.
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: Field("f", v)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: Field("d", v)),
    st.builds(lambda scale, unscaled: Field("D", Decimal(unscaled).scaleb(-scale)),
              st.integers(0, 20), st.integers(-2 ** 31, 2 ** 31 - 1)),
    st.booleans(), st.none(), st.text(max_size=30), st.binary(max_size=30),
    st.binary(max_size=30).map(lambda v: Field("S", v)),
)
# Header names: text, or bytes that may not be UTF-8.
KEYS = st.one_of(st.text(max_size=20), st.binary(max_size=6))
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=30)
HEADERS = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=8),
    st.integers(1, 3000).map(lambda depth: ("deep", depth)),
    st.integers(0, 6000).map(lambda size: ("wide", size)),
)
SHORTSTRS = st.one_of(st.text(max_size=40).filter(lambda t: len(t.encode()) < 256),
                      st.binary(max_size=40))
# Every property, with the values RabbitMQ itself lets through (it refuses a
# delivery-mode other than 1 or 2, a non-numeric expiration, another user-id).
PROPERTIES = st.fixed_dictionaries({}, optional={
    "content-type": SHORTSTRS, "content-encoding": SHORTSTRS, "headers": HEADERS,
    "delivery-mode": st.sampled_from([1, 2]), "priority": st.integers(0, 255),
    "correlation-id": SHORTSTRS, "reply-to": SHORTSTRS,
    "expiration": st.integers(10 ** 6, 10 ** 9).map(str), "message-id": SHORTSTRS,
    "timestamp": st.integers(0, 2 ** 64 - 1), "type": SHORTSTRS, "user-id": st.just("guest"),
    "app-id": SHORTSTRS, "reserved": SHORTSTRS,
})


def onTheWire(properties):
    """
    The generated properties as L{amqpfields.contentHeader} takes them.
    """
    headers = properties.get("headers")
    if isinstance(headers, tuple):
        kind, n = headers
        properties = dict(properties, headers=nestedTable(n) if kind == "deep"
                          else {f"k{i}": i for i in range(n)})
    return properties


def shouldRefuse(properties, payload):
    """
    The model of the bounds: whether resmon must refuse these properties.
    """
    if len(payload) - 12 > DEFAULT_MAX_PROPERTIES_BYTES:
        return True
    for name, value in properties.items():
        if isinstance(value, bytes) and not _utf8(value):
            return True
    headers = properties.get("headers")
    if headers is None:
        return False
    if isinstance(headers, tuple):
        kind, n = headers
        return n > DEFAULT_MAX_TABLE_DEPTH if kind == "deep" else n > DEFAULT_MAX_TABLE_FIELDS
    fields, depth, badKey = _walk(headers, 1)
    return fields > DEFAULT_MAX_TABLE_FIELDS or depth > DEFAULT_MAX_TABLE_DEPTH or badKey


def _walk(container, depth):
    fields, deepest, badKey = 0, depth, False
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in items:
        fields += 1
        if isinstance(key, bytes) and not _utf8(key):
            badKey = True
        if isinstance(value, (dict, list)):
            inner, innerDepth, innerBad = _walk(value, depth + 1)
            fields += inner
            deepest = max(deepest, innerDepth)
            badKey = badKey or innerBad
    return fields, deepest, badKey


def _utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def statusEvent(host):
    return json.dumps({"v": 1, "kind": "status", "host": host, "status": "online", "since": 1.0,
                       "last_seen": 1.0, "seq": 1}).encode()


def generated(count):
    """
    C{count} property sets drawn by hypothesis. Drawn up front, because the
    test runs inside the reactor (pytest-twisted's greenlet), where a
    hypothesis test cannot wait on the broker: no shrinking, but a failure
    names the very properties that failed.
    """
    examples = []

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(PROPERTIES)
    def collect(properties):
        examples.append(properties)

    collect()
    return examples


@pytest_twisted.inlineCallbacks
def test_generated_properties_and_headers_never_stop_any_consumer(broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-fuzz").start()
    published = {"measures": {}, "statuses": {}}
    for n, properties in enumerate(generated(EXAMPLES)):
        wire = onTheWire(properties)
        for kind, host, key, body in (("measures", f"fz-{n}", f"fz-{n}.measure", goodMeasure(f"fz-{n}")),
                                      ("statuses", f"fzw-{n}", f"fzw-{n}.status", statusEvent(f"fzw-{n}"))):
            header = contentHeader(len(body), wire)
            published[kind][host] = shouldRefuse(properties, header)
            yield server.amqp.publishRaw(server.exchange, key, body, header)
        yield server.assertFlows(f"ok-{n}", f"properties {properties!r}"[:300])
    refused = sum(published["measures"].values())
    assert 0 < refused < len(published["measures"]), "the generator covers both outcomes"
    yield server.assertRejected(analyzer=refused, web=refused)
    hosts = {m.get("host") for m in server.client.messages}
    for kind in ("measures", "statuses"):
        for host, isRefused in published[kind].items():
            assert (host in hosts) != isRefused, (host, isRefused)


def test_the_model_matches_simple_cases():
    small = contentHeader(0, {})
    assert not shouldRefuse({"headers": {"a": [1, {"b": 2}]}}, small)
    assert shouldRefuse({"headers": {b"\xff": 1}}, small)
    assert not shouldRefuse({"headers": nested(DEFAULT_MAX_TABLE_DEPTH)}, small)
    assert shouldRefuse({"headers": nested(DEFAULT_MAX_TABLE_DEPTH + 1)}, small)
    assert shouldRefuse({"content-type": b"\xc3"}, small)
    assert shouldRefuse({}, struct.pack("!12x") + b"x" * (DEFAULT_MAX_PROPERTIES_BYTES + 1))


def nested(depth):
    table = {"leaf": 1}
    for _ in range(depth - 1):
        table = {"n": table}
    return table
