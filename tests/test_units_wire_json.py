"""
L{wire.loadJSON} reads bodies with orjson where that is certainly what
Python's json would read (L{wire._fastLoad}), else with json itself
(L{wire._slowLoad}): the two must agree on every body, hostile ones first.
"""

import json
import math

from hypothesis import given, settings, strategies as st

from resmon import wire
from resmon.wire import Rejected


def outcome(load, body):
    try:
        return "read", load(body)
    except Rejected as e:
        return "rejected", e.reason


def slowly(body):
    document = wire._slowLoad(body)
    if not isinstance(document, dict):
        raise Rejected("shape", "top level is not a JSON object")
    return document


def identical(a, b):
    """
    Equal, of the same types all the way down, floats with the same sign.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def assertAgree(body):
    fast, slow = outcome(wire.loadJSON, body), outcome(slowly, body)
    assert fast[0] == slow[0], (body, fast, slow)
    if fast[0] == "read":
        assert identical(fast[1], slow[1]), (body, fast, slow)
    else:
        assert fast[1] == slow[1], (body, fast, slow)


EDGES = [
    b'0', b'-0', b'-0.0', b'1E+2', b'0.1', b'1.7976931348623157e308', b'5e-324', b'1e-400',
    b'1e999', b'-1e999', b'NaN', b'Infinity', b'-Infinity',
    b'9223372036854775807', b'-9223372036854775808', b'-9223372036854775809',
    b'18446744073709551615', b'18446744073709551616', b'123456789012345678901234567890',
    b'1' * 5000, b'0.' + b'1' * 40,
    b'"\\u0000"', b'"\\ud83d\\ude00"', b'"\\ud800"', b'"\\udc00x"', b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"', b'"\xff"', b'"\t"', b'"\\/"', b'"\xc3\xa9"',
    b'01', b'1.', b'.5', b'+1', b'-', b'[1,]', b'{"a":1,}', b"'a'", b'true', b'null', b'[]',
]


def test_edges_of_both_parsers_are_read_or_refused_alike():
    for value in EDGES:
        for body in (b'{"m":' + value + b'}', value, b'\xef\xbb\xbf{"m":' + value + b'}',
                     b' {"m": [' + value + b', ' + value + b']}\n', b'{"m":1,"m":' + value + b'}'):
            assertAgree(body)


def test_nesting_is_read_or_refused_alike_at_any_depth():
    # orjson reads 1,023 levels; json refuses from about 990 (less on a
    # deeper stack). Deep documents are compared by outcome: comparing
    # their contents would itself run out of stack.
    def kind(result):
        return result[0] if result[0] == "read" else result
    for depth in (10, 399, 400, 500, 989, 990, 1000, 1023, 1024, 5000):
        for body in (b'{"a":' + b'[' * depth + b']' * depth + b'}',
                     b'{"a":' + b'{"b":' * depth + b'1' + b'}' * depth + b'}'):
            assert kind(outcome(wire.loadJSON, body)) == kind(outcome(slowly, body)), depth


def test_a_deep_document_orjson_would_read_is_refused_as_too_deep():
    body = b'{"a":' + b'[' * 1000 + b']' * 1000 + b'}'
    assert outcome(wire.loadJSON, body) == ("rejected", "too-deep")


def test_the_fast_path_is_taken_for_a_measure():
    body = json.dumps({"v": 1, "host": "h", "seq": 1, "ts": 1.5, "metrics": {
        "cpu": {"percent": 1.0, "per_core": [1.0, 2.0]}, "memory": {"total": 2 ** 40}}}).encode()
    assert wire._fastLoad(body) == json.loads(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children,
                                                                       max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=10 ** 6), st.binary(max_size=2))
def test_documents_and_their_corruptions_are_read_or_refused_alike(value, where, junk):
    body = json.dumps({"m": value}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assertAgree(body)
    cut = where % len(body)
    assertAgree(body[:cut] + junk + body[cut + len(junk):])
