"""
resmon's wire format: encoding, decoding and validation of every message on
the bus. Documented field by field in C{docs/protocol.md}.

Decoding never trusts its input: anything that is not exactly a valid
message raises L{Rejected} with a short machine-readable C{reason} (used as
a counter name) and a human-readable detail.
"""

import json
import math
from dataclasses import dataclass, field

from resmon import topics

VERSION = 1
DEFAULT_MAX_BODY = 256 * 1024
LEVELS = ("LOW", "MEDIUM", "HIGH")
# Seconds a message's time may be ahead of the receiver's clock.
DEFAULT_MAX_CLOCK_SKEW = 300.0
# Every role forgets a host silent for this many seconds (--forget-after);
# the analyzer announces it with a status of this word.
DEFAULT_FORGET_AFTER = 86400.0
FORGOTTEN = "forgotten"
# Most seconds between two sweeps for hosts to forget.
MAX_FORGET_SWEEP = 60.0


def forgetSweepInterval(forgetAfter):
    """
    Seconds between two sweeps for silent hosts: a host is forgotten at
    most a quarter of C{forgetAfter} (or a minute) late.
    """
    return max(0.05, min(MAX_FORGET_SWEEP, forgetAfter / 4))
# Metrics resmon does not know are kept for newer agents and third-party
# analyzers, up to this many keys and this many bytes of JSON together per
# measure; beyond either, all of them are dropped (the known ones are kept).
MAX_UNKNOWN_METRICS = 16
MAX_UNKNOWN_METRICS_BYTES = 4096
KNOWN_METRICS = frozenset(
    ("cpu", "memory", "swap", "load", "disks", "disk_io", "net_io"))


class Rejected(ValueError):
    """
    A message that is not valid. C{reason} is one short word for counting.
    """

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Measure:
    """
    One sample of one host, as published by an agent.

    C{seq} is L{None} for a measure in the proof-of-concept format.
    """

    host: str
    seq: object
    ts: float
    interval: object
    metrics: dict
    legacy: bool = False
    hostWord: str = field(default="", compare=False)
    # How many unknown metrics were dropped for being over the bound.
    droppedUnknown: int = field(default=0, compare=False)

    def __post_init__(self):
        if not self.hostWord:
            self.hostWord = topics.hostWord(self.host)


def _rejectConstant(name):
    raise Rejected("non-finite", f"{name} is not a number resmon accepts")


def _parseFloat(text):
    value = float(text)
    if not math.isfinite(value):
        raise Rejected("non-finite", f"{text[:20]} is out of range")
    return value


def loadJSON(body, maxBody=DEFAULT_MAX_BODY):
    """
    Parse a message body as a UTF-8 JSON object, with the checks every
    message gets: size, encoding, syntax, finite numbers, an object at top.
    """
    if not isinstance(body, bytes):
        raise Rejected("type", "body is not bytes")
    if len(body) > maxBody:
        raise Rejected("too-large", f"{len(body)} bytes is over the {maxBody} byte limit")
    if not body:
        raise Rejected("empty", "empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected("encoding", f"not UTF-8 ({e.reason} at byte {e.start})")
    try:
        document = json.loads(
            text, parse_constant=_rejectConstant, parse_float=_parseFloat
        )
    except Rejected:
        raise
    except RecursionError:
        raise Rejected("too-deep", "JSON nested too deeply")
    except ValueError as e:
        # json.JSONDecodeError, and int() refusing a number with too many digits
        raise Rejected("json", str(e)[:120])
    if not isinstance(document, dict):
        raise Rejected("shape", "top level is not a JSON object")
    return document


def _isNumber(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, where, minimum=None, maximum=None, optional=False):
    if value is None and optional:
        return None
    if not _isNumber(value):
        raise Rejected("type", f"{where} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise Rejected("non-finite", f"{where} is not finite")
    if minimum is not None and value < minimum:
        raise Rejected("range", f"{where} is {value}, below {minimum}")
    if maximum is not None and value > maximum:
        raise Rejected("range", f"{where} is {value}, above {maximum}")
    return value


def _percent(value, where, optional=False):
    return _number(value, where, 0, 100, optional)


def _object(value, where):
    if not isinstance(value, dict):
        raise Rejected("type", f"{where} must be an object")
    return value


def _string(value, where, maxLength=255):
    if not isinstance(value, str) or not value:
        raise Rejected("type", f"{where} must be a non-empty string")
    if len(value) > maxLength:
        raise Rejected("range", f"{where} is longer than {maxLength} characters")
    return value


_RATES = {
    "disk_io": ("read_bytes_per_s", "write_bytes_per_s", "read_ops_per_s", "write_ops_per_s"),
    "net_io": ("bytes_sent_per_s", "bytes_recv_per_s", "packets_sent_per_s", "packets_recv_per_s"),
}


def validateMetrics(metrics):
    """
    Check the known metrics of a measure (see C{docs/protocol.md}). Every
    metric is optional, so an agent on a platform without swap or load still
    sends valid measures; unknown metrics are left alone for newer agents
    (L{boundUnknownMetrics} bounds them).
    """
    _object(metrics, "metrics")
    if "cpu" in metrics:
        cpu = _object(metrics["cpu"], "metrics.cpu")
        _percent(cpu.get("percent"), "metrics.cpu.percent")
        perCore = cpu.get("per_core", [])
        if not isinstance(perCore, list) or len(perCore) > 4096:
            raise Rejected("type", "metrics.cpu.per_core must be a list of at most 4096 numbers")
        for i, value in enumerate(perCore):
            _percent(value, f"metrics.cpu.per_core[{i}]")
    for name in ("memory", "swap"):
        if name in metrics:
            memory = _object(metrics[name], f"metrics.{name}")
            _percent(memory.get("percent"), f"metrics.{name}.percent")
            for key in ("total", "used", "available", "free"):
                if key in memory:
                    _number(memory[key], f"metrics.{name}.{key}", 0)
    if "load" in metrics:
        load = metrics["load"]
        if not isinstance(load, list) or len(load) != 3:
            raise Rejected("type", "metrics.load must be a list of 3 numbers")
        for i, value in enumerate(load):
            _number(value, f"metrics.load[{i}]", 0)
    if "disks" in metrics:
        disks = metrics["disks"]
        if not isinstance(disks, list) or len(disks) > 1024:
            raise Rejected("type", "metrics.disks must be a list of at most 1024 objects")
        for i, disk in enumerate(disks):
            _object(disk, f"metrics.disks[{i}]")
            _string(disk.get("mount"), f"metrics.disks[{i}].mount", 4096)
            _percent(disk.get("percent"), f"metrics.disks[{i}].percent")
            for key in ("total", "used", "free"):
                _number(disk.get(key), f"metrics.disks[{i}].{key}", 0)
    for name, keys in _RATES.items():
        if name in metrics:
            rates = _object(metrics[name], f"metrics.{name}")
            for key in keys:
                # null on the first sample of an agent run: no delta yet.
                _number(rates.get(key), f"metrics.{name}.{key}", 0, optional=True)
    return metrics


def notFromTheFuture(value, where, notAfter):
    """
    Reject C{value} (a time, seconds since the epoch) if it is later than
    C{notAfter} (the receiver's clock plus the clock skew it allows): a
    message from the future would stay the newest of its host.
    """
    if notAfter is not None and _isNumber(value) and value > notAfter:
        raise Rejected("future", f"{where} is {value}, ahead of the receiver's clock by more "
                                 f"than the allowed skew (accepted up to {notAfter:.3f})")
    return value


def boundUnknownMetrics(metrics):
    """
    Drop every metric of C{metrics} (a dict, changed in place) that resmon
    does not know if together they are more than L{MAX_UNKNOWN_METRICS}
    keys or L{MAX_UNKNOWN_METRICS_BYTES} bytes of JSON.

    @return: how many were dropped (0 when they are within the bound).
    """
    unknown = [key for key in metrics if key not in KNOWN_METRICS]
    if not unknown:
        return 0
    if len(unknown) <= MAX_UNKNOWN_METRICS:
        size = len(_dumps({key: metrics[key] for key in unknown}))
        if size <= MAX_UNKNOWN_METRICS_BYTES:
            return 0
    for key in unknown:
        del metrics[key]
    return len(unknown)


def decodeMeasure(routingKey, body, maxBody=DEFAULT_MAX_BODY, notAfter=None):
    """
    Decode and validate a measure received under C{routingKey}.

    Accepts resmon's v1 measure and the proof-of-concept body
    C{{"cpu_percentage": 42.0}}, whose host is taken from the routing key.
    Unknown metrics over the bound are dropped (see L{boundUnknownMetrics});
    the measure's C{droppedUnknown} says how many.

    @param notAfter: the latest C{ts} accepted (the receiver's clock plus
        the skew it allows), or L{None} to accept any.
    @raise Rejected: for anything else.
    """
    words = topics.splitKey(routingKey)
    if words is None or words[1] != topics.MEASURE:
        raise Rejected("routing-key", f"{routingKey[:80]!r} is not <host>.measure")
    document = loadJSON(body, maxBody)
    if "v" not in document and "cpu_percentage" in document:
        cpu = _percent(document["cpu_percentage"], "cpu_percentage")
        return Measure(
            host=words[0], seq=None, ts=None, interval=None,
            metrics={"cpu": {"percent": cpu}}, legacy=True, hostWord=words[0],
        )
    if document.get("v") != VERSION:
        raise Rejected("version", f"unsupported version {str(document.get('v'))[:20]}")
    if document.get("kind", "measure") != "measure":
        raise Rejected("kind", "not a measure")
    host = _string(document.get("host"), "host")
    seq = document.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Rejected("type", "seq must be a non-negative integer")
    ts = notFromTheFuture(_number(document.get("ts"), "ts", 0), "ts", notAfter)
    interval = _number(document.get("interval"), "interval", 0)
    if interval == 0:
        raise Rejected("range", "interval is 0; it must be above 0")
    metrics = validateMetrics(document.get("metrics"))
    if topics.hostWord(host) != words[0]:
        raise Rejected("routing-key", f"host {host[:80]!r} was published under {routingKey[:80]!r}")
    dropped = boundUnknownMetrics(metrics)
    return Measure(host=host, seq=seq, ts=ts, interval=interval, metrics=metrics, hostWord=words[0],
                   droppedUnknown=dropped)


def encodeMeasure(host, seq, ts, interval, metrics):
    """
    Encode a v1 measure. It also carries the total CPU as a top-level
    C{cpu_percentage}, when C{metrics} has it, for a proof-of-concept
    analyzer reading resmon's measures.
    """
    document = {
        "v": VERSION, "kind": "measure", "host": host, "seq": seq,
        "ts": ts, "interval": interval, "metrics": metrics,
    }
    cpu = metrics.get("cpu") if isinstance(metrics, dict) else None
    if isinstance(cpu, dict) and _isNumber(cpu.get("percent")):
        document[LEGACY_CPU] = cpu["percent"]
    return _dumps(document)


def encodeAnalysis(analysis):
    """
    Encode an analysis dict built by L{resmon.services.analyzer}.
    """
    return _dumps(analysis)


def encodeEvent(document):
    """
    Encode any resmon event (analysis, status) for the bus or a client.
    """
    return _dumps(document)


def decodeEvent(routingKey, body, maxBody=DEFAULT_MAX_BODY, notAfter=None):
    """
    Decode an event (analysis or status) for fan-out to clients: the web
    only needs a valid v1 object with a kind and a host that match the
    routing key; it forwards the rest as is.

    @param notAfter: the latest C{ts}, C{analyzed_at} (analyses), C{since}
        and C{last_seen} (statuses) accepted (the receiver's clock plus the
        skew it allows), or L{None} to accept any.
    """
    words = topics.splitKey(routingKey)
    if words is None:
        raise Rejected("routing-key", f"{routingKey[:80]!r} is not <host>.<kind>")
    document = loadJSON(body, maxBody)
    if document.get("v") != VERSION:
        raise Rejected("version", f"unsupported version {str(document.get('v'))[:20]}")
    if document.get("kind") != words[1]:
        raise Rejected("kind", f"kind {str(document.get('kind'))[:20]!r} under {routingKey[:80]!r}")
    host = _string(document.get("host"), "host")
    if topics.hostWord(host) != words[0]:
        raise Rejected("routing-key", f"host {host[:80]!r} was published under {routingKey[:80]!r}")
    for name in ("ts", "analyzed_at", "since", "last_seen"):
        notFromTheFuture(document.get(name), name, notAfter)
    return document


def _dumps(document):
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")


# Proof-of-concept (legacy) analyses.
#
# The proof of concept resmon grew from publishes {"cpu_result": "LOW"} under
# <host>.analysis, and reads "cpu_percentage" from measures. A web role next
# to a proof-of-concept analyzer accepts such an analysis and turns it into a
# v1 one, marked as coming from a legacy analyzer.

LEGACY_CPU = "cpu_percentage"
LEGACY_RESULT = "cpu_result"
# The "analyzer" of an analysis made from a proof-of-concept one.
LEGACY_ANALYZER = "legacy"


def isLegacyAnalysis(document):
    """
    Whether C{document} (a decoded JSON object) is exactly a
    proof-of-concept analysis: C{{"cpu_result": <level>}} and nothing else.
    """
    return (set(document) == {LEGACY_RESULT}
            and isinstance(document[LEGACY_RESULT], str) and document[LEGACY_RESULT] in LEVELS)


def decodeLegacyAnalysis(routingKey, body, receivedAt, maxBody=DEFAULT_MAX_BODY):
    """
    Decode a proof-of-concept analysis received under C{<host>.analysis}
    into a v1 analysis of host C{<host>} (the routing key's word): its
    C{level}, C{levels.cpu} and C{cpu_result} are the C{cpu_result};
    C{seq}, C{ts} and C{interval} are L{None}; C{analyzed_at} is
    C{receivedAt}; C{analyzer} is L{LEGACY_ANALYZER} and C{legacy} is
    C{True}.

    @raise Rejected: the body is not exactly a proof-of-concept analysis
        (C{version}, as for any other body without C{v}), or the key is not
        C{<host>.analysis} (C{routing-key}).
    """
    words = topics.splitKey(routingKey)
    if words is None or words[1] != topics.ANALYSIS:
        raise Rejected("routing-key", f"{routingKey[:80]!r} is not <host>.analysis")
    document = loadJSON(body, maxBody)
    if not isLegacyAnalysis(document):
        raise Rejected("version", f"unsupported version {str(document.get('v'))[:20]}")
    level = document[LEGACY_RESULT]
    return {
        "v": VERSION, "kind": topics.ANALYSIS, "host": words[0], "seq": None, "ts": None,
        "interval": None, "analyzed_at": receivedAt, "analyzer": LEGACY_ANALYZER,
        "legacy": True, "level": level, "levels": {"cpu": level}, LEGACY_RESULT: level,
        "analyses": {}, "metrics": {},
    }


def decodeEventOrLegacy(routingKey, body, receivedAt, maxBody=DEFAULT_MAX_BODY, notAfter=None):
    """
    L{decodeEvent}, and for a body without C{v} under C{<host>.analysis},
    L{decodeLegacyAnalysis}: C{(document, legacy)}.

    @raise Rejected: as L{decodeEvent} does, for anything else.
    """
    try:
        return decodeEvent(routingKey, body, maxBody, notAfter), False
    except Rejected as e:
        if e.reason != "version" or not routingKey.endswith("." + topics.ANALYSIS):
            raise
        try:
            return decodeLegacyAnalysis(routingKey, body, receivedAt, maxBody), True
        except Rejected:
            raise e
