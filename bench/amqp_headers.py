"""
Cost of decoding one message's content-header frame (its AMQP properties),
before (txAMQP 0.8.2's own frame parser) and after (resmon's bounded
decoder, resmon.bus.properties, in ResmonAMQClient): resmon's own
properties, a pika-style header table, every field type, and the hostile
ones: 5,000 entries, 200 small fields, 3,000 and 2,000 levels deep.

Prints microseconds per message for each, or what the parser raised (an
exception there drops the AMQP connection and the broker redelivers the
message for ever), and what the bounded decoder did with it.

Usage: python bench/amqp_headers.py [--seconds S]
"""

import argparse
import os
import struct
import sys
import time
from decimal import Decimal

from twisted.internet.task import Clock
from txamqp.protocol import AMQClient
from txamqp.spec import load as loadSpec

from resmon.bus.amqp import SPEC_PATH
from resmon.bus.connection import Delegate, ResmonAMQClient
from resmon.bus.properties import REFUSED

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))
from amqpfields import Field, contentHeader, nestedTable  # noqa: E402


def frame(payload):
    return struct.pack("!BHI", 2, 1, len(payload)) + payload + b"\xce"


CASES = {
    "resmon's own (delivery-mode, content-type)":
        {"delivery-mode": 2, "content-type": "application/json"},
    "pika-style: 3 headers (S, I, t)":
        {"content-type": "application/json", "headers": {"source": "x", "n": 1, "ok": True}},
    "every field type once":
        {"headers": {"A": [1, "a", None], "l": 2 ** 40, "V": None, "d": 0.1, "T": Field("T", 1),
                     "D": Decimal("1.5"), "f": Field("f", 0.5), "b": Field("b", -1),
                     "s": Field("s", -2), "u": Field("u", 2), "x": b"\x00", "F": {"a": 1}}},
    "5,000 entries (I), 55 KB": {"headers": {f"k{i}": i for i in range(5000)}},
    "128 fields (I), the most accepted, 1 KB": {"headers": {f"{i}": i for i in range(128)}},
    "200 fields (I), 1.6 KB": {"headers": {f"{i}": i for i in range(200)}},
    "3,000 deep, 21 KB": {"headers": nestedTable(3000)},
    "2,000 deep, 14 KB": {"headers": nestedTable(2000)},
}


def perMessage(decode, data, seconds):
    """
    Microseconds per call of C{decode(data)}, or the exception it raised.
    """
    try:
        result = decode(data)
    except BaseException as e:
        return None, f"raises {type(e).__name__}"
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            decode(data)
        calls += 10
        elapsed = time.perf_counter() - start
        if elapsed > seconds:
            break
    return elapsed / calls * 1e6, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time spent on each case")
    args = parser.parse_args()
    spec = loadSpec(SPEC_PATH)
    client = ResmonAMQClient(Delegate(None, None), vhost="/", spec=spec, heartbeat=0, clock=Clock())

    def before(data):
        return AMQClient._unpack_frame(client, data)

    print(f"{'content header':45} {'txAMQP 0.8.2':>22} {'resmon':>12}  resmon's verdict")
    for name, properties in CASES.items():
        data = frame(contentHeader(0, properties))
        old, oldResult = perMessage(before, data, args.seconds)
        new, newResult = perMessage(client._unpack_frame, data, args.seconds)
        refused = newResult.payload.properties.get(REFUSED)
        oldText = f"{old:10.1f} us/message" if old is not None else f"{oldResult:>22}"
        print(f"{name:45} {oldText:>22} {new:9.1f} us  {'refused: ' + refused if refused else 'decoded'}")


if __name__ == "__main__":
    main()
