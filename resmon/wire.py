"""
resmon's wire format: encoding, decoding and validation of every message
that crosses a process boundary, the one place where formats are defined:
on the bus (measures, analyses, statuses, liveness ticks) and between the
web role and its clients (snapshots, history, WebSocket and Server-Sent
Events frames, HTTP API and error bodies, the clients' own messages).
Documented field by field in C{docs/protocol.md}.

Decoding never trusts its input: anything that is not exactly a valid
message raises L{Rejected} with a short machine-readable C{reason} (used as
a counter name) and a human-readable detail.
"""

import base64
import binascii
import json
import math
import sys
from dataclasses import dataclass, field

from resmon import topics

try:
    import orjson as _orjson  # optional: resmon[fast], see encodeBuiltAnalysis
except ImportError:  # pragma: no cover - depends on the installation
    _orjson = None

VERSION = 1
DEFAULT_MAX_BODY = 256 * 1024
LEVELS = ("LOW", "MEDIUM", "HIGH")
LOW, MEDIUM, HIGH = LEVELS
# A level's rank: the higher, the worse.
LEVEL_ORDER = {level: rank for rank, level in enumerate(LEVELS)}
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


# json.loads with these arguments, built once rather than for every message.
_DECODER = json.JSONDecoder(parse_constant=_rejectConstant, parse_float=_parseFloat)


# Nineteen digits in a row: a number orjson might read otherwise than
# json does (an integer beyond 64 bits becomes a float there). Found by
# turning every digit into "0" and everything else into " " (a regular
# expression costs more than orjson's whole parse).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19
# orjson reads nesting up to 1,024 levels, json as deep as Python's stack
# lets it (about 990 from a shallow stack, less from a deep one): a body
# with fewer arrays and objects than this is no deeper in either.
_FAST_OPENINGS = 400


def _fastLoad(body):
    """
    The document orjson reads from C{body}, where it is certainly the one
    L{_DECODER} would read (an eighth of its time, measured on measures of
    770 bytes); L{None} where that is not certain or orjson refuses the
    body (bad UTF-8, a lone surrogate, NaN, a number out of range, a BOM):
    the slow path then says what is wrong.
    """
    if (_orjson is None or body.count(b"[") + body.count(b"{") >= _FAST_OPENINGS
            or _LONG_NUMBER in body.translate(_DIGITS_AS_ZEROS)):
        return None
    try:
        return _orjson.loads(body)
    except _orjson.JSONDecodeError:
        return None


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
    document = _fastLoad(body)
    if document is None:
        document = _slowLoad(body)
    if not isinstance(document, dict):
        raise Rejected("shape", "top level is not a JSON object")
    return document


def _slowLoad(body):
    """
    The document in C{body} as Python's json reads it, with finite numbers
    only; L{Rejected} says what is wrong with a body it refuses.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected("encoding", f"not UTF-8 ({e.reason} at byte {e.start})")
    try:
        if text.startswith("\ufeff"):
            # What json.loads says of a BOM; the decoder alone would not.
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        document = _DECODER.decode(text)
    except Rejected:
        raise
    except RecursionError:
        raise Rejected("too-deep", "JSON nested too deeply")
    except ValueError as e:
        # json.JSONDecodeError, and int() refusing a number with too many digits
        raise Rejected("json", str(e)[:120])
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


# Numbers that need no more check than a range (NaN and the infinities fail
# any range; bool, an int too, is not one of them).
_PLAIN_NUMBERS = (int, float)
_MAX = sys.float_info.max  # what math.isfinite takes from an int, too


def _isPercent(value):
    return type(value) in _PLAIN_NUMBERS and 0 <= value <= 100


def _isAmount(value):
    return type(value) in _PLAIN_NUMBERS and 0 <= value <= _MAX


def validateMetrics(metrics):
    """
    Check the known metrics of a measure (see C{docs/protocol.md}). Every
    metric is optional, so an agent on a platform without swap or load still
    sends valid measures; unknown metrics are left alone for newer agents
    (L{boundUnknownMetrics} bounds them).
    """
    # Each check tests the common case first, without building the name of
    # the field for the message; the general check says what is wrong.
    if type(metrics) is not dict:
        _object(metrics, "metrics")
    cpu = metrics.get("cpu")
    if cpu is not None or "cpu" in metrics:
        if type(cpu) is not dict:
            _object(cpu, "metrics.cpu")
        if not _isPercent(cpu.get("percent")):
            _percent(cpu.get("percent"), "metrics.cpu.percent")
        perCore = cpu.get("per_core", [])
        if not isinstance(perCore, list) or len(perCore) > 4096:
            raise Rejected("type", "metrics.cpu.per_core must be a list of at most 4096 numbers")
        for i, value in enumerate(perCore):
            if not (type(value) in _PLAIN_NUMBERS and 0 <= value <= 100):
                _percent(value, f"metrics.cpu.per_core[{i}]")
    for name in ("memory", "swap"):
        memory = metrics.get(name)
        if memory is None and name not in metrics:
            continue
        if type(memory) is not dict:
            _object(memory, f"metrics.{name}")
        if not _isPercent(memory.get("percent")):
            _percent(memory.get("percent"), f"metrics.{name}.percent")
        for key in ("total", "used", "available", "free"):
            if key in memory:
                value = memory[key]
                if not (type(value) in _PLAIN_NUMBERS and 0 <= value <= _MAX):
                    _number(value, f"metrics.{name}.{key}", 0)
    if "load" in metrics:
        load = metrics["load"]
        if not isinstance(load, list) or len(load) != 3:
            raise Rejected("type", "metrics.load must be a list of 3 numbers")
        for i, value in enumerate(load):
            if not (type(value) in _PLAIN_NUMBERS and 0 <= value <= _MAX):
                _number(value, f"metrics.load[{i}]", 0)
    if "disks" in metrics:
        disks = metrics["disks"]
        if not isinstance(disks, list) or len(disks) > 1024:
            raise Rejected("type", "metrics.disks must be a list of at most 1024 objects")
        for i, disk in enumerate(disks):
            if type(disk) is not dict:
                _object(disk, f"metrics.disks[{i}]")
            mount = disk.get("mount")
            if not (type(mount) is str and 0 < len(mount) <= 4096):
                _string(mount, f"metrics.disks[{i}].mount", 4096)
            if not _isPercent(disk.get("percent")):
                _percent(disk.get("percent"), f"metrics.disks[{i}].percent")
            for key in ("total", "used", "free"):
                value = disk.get(key)
                if not (type(value) in _PLAIN_NUMBERS and 0 <= value <= _MAX):
                    _number(value, f"metrics.disks[{i}].{key}", 0)
    for name, keys in _RATES.items():
        rates = metrics.get(name)
        if rates is None and name not in metrics:
            continue
        if type(rates) is not dict:
            _object(rates, f"metrics.{name}")
        for key in keys:
            # null on the first sample of an agent run: no delta yet.
            value = rates.get(key)
            if value is not None and not (
                    type(value) in _PLAIN_NUMBERS and 0 <= value <= _MAX):
                _number(value, f"metrics.{name}.{key}", 0)
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
    if metrics.keys() <= KNOWN_METRICS:
        return 0
    unknown = [key for key in metrics if key not in KNOWN_METRICS]
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
    word = words[0]
    if len(word) > topics.MAX_HOST_WORD or not word.isascii():
        # A proof-of-concept measure's host is its routing key's word, which
        # may hold any UTF-8: the bound is in bytes.
        size = len(word.encode("utf-8", "surrogatepass"))
        if size > topics.MAX_HOST_WORD:
            raise Rejected("routing-key", f"the host {word[:80]!r}... is {size} bytes as a routing "
                                          f"word; at most {topics.MAX_HOST_WORD} fit in the routing "
                                          f"key of its analysis ({topics.MAX_ROUTING_KEY} bytes)")
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
    # The common case first, as in validateMetrics; the general check says
    # what is wrong.
    host = document.get("host")
    if not (type(host) is str and 0 < len(host) <= 255):
        _string(host, "host")
    seq = document.get("seq")
    if not (type(seq) is int and seq >= 0):
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise Rejected("type", "seq must be a non-negative integer")
    ts = document.get("ts")
    if not (type(ts) is float and 0 <= ts <= _MAX):
        _number(ts, "ts", 0)
    notFromTheFuture(ts, "ts", notAfter)
    interval = document.get("interval")
    if not (type(interval) is float and 0 < interval <= _MAX):
        _number(interval, "interval", 0)
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


def encodeBuiltAnalysis(analysis):
    """
    Encode an analysis the analyzer built (L{analysisDocument} of a decoded
    L{Measure} and validated findings), as L{encodeAnalysis} does, faster
    when the optional orjson is installed (C{pip install resmon[fast]}).

    Every number of such an analysis is finite by construction (the
    measure's were decoded by L{loadJSON}, the findings' checked by
    L{resmon.analysis.pipeline.validateFindings}): the one place where
    orjson (NaN as C{null}) and L{encodeJSON} (L{ValueError}) differ is out
    of reach. What orjson would write differently otherwise (non-ASCII
    characters, integers over 64 bits, keys that are not strings) goes
    through L{encodeJSON}.
    """
    if _orjson is not None:
        try:
            body = _orjson.dumps(analysis)
        except TypeError:
            pass
        else:
            if body.isascii():
                return body
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


def encodeJSON(document):
    """
    resmon's one JSON encoder for the wire: compact, ASCII, no NaN or
    Infinity (L{ValueError} for them), as UTF-8 bytes.
    """
    return _dumps(document)


def _optional(document, name, check):
    value = document.get(name)
    return None if value is None else check(value, name)


def _level(value, where):
    if value not in LEVELS:
        raise Rejected("type", f"{where} must be one of {', '.join(LEVELS)} or null")
    return value


def _count(value, where):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Rejected("type", f"{where} must be a non-negative integer or null")
    return value


def _time(value, where):
    return _number(value, where, 0)


# Analyses (analyzer role -> web role, and anyone on the bus)


def analysisDocument(measure, analyzedAt, level, levels, analyses):
    """
    The analysis of C{measure} (a L{Measure}) as a dict, ready for
    L{encodeAnalysis}.

    @param level: the overall level (one of L{LEVELS}) or L{None}.
    @param levels: the level of each summary subject (C{cpu}, C{memory}).
    @param analyses: each analyzer's findings, by analyzer name.
    """
    return {
        "v": VERSION,
        "kind": topics.ANALYSIS,
        "host": measure.host,
        "seq": measure.seq,
        "ts": measure.ts,
        "interval": measure.interval,
        "analyzed_at": analyzedAt,
        "level": level,
        "levels": levels,
        "cpu_result": levels.get("cpu"),
        "analyses": analyses,
        "metrics": measure.metrics,
    }


def decodeAnalysis(routingKey, body, maxBody=DEFAULT_MAX_BODY, notAfter=None):
    """
    Decode and validate an analysis received under C{routingKey} (what the
    web role forwards to its clients).

    Beyond L{decodeEvent}'s checks (version, kind, the host matching the
    routing key, times from the future), the fields the web role reads are
    typed: C{seq} a non-negative integer or null; C{ts}, C{analyzed_at} and
    C{interval} non-negative numbers or null; C{level}, C{cpu_result} and
    every value of the C{levels} object one of L{LEVELS} or null;
    C{levels} and C{metrics} objects or null. Anything else is forwarded as is.

    @return: the document, a dict.
    @raise Rejected: for anything else.
    """
    words = topics.splitKey(routingKey)
    if words is not None and words[1] != topics.ANALYSIS:
        raise Rejected("routing-key", f"{routingKey[:80]!r} is not <host>.{topics.ANALYSIS}")
    document = decodeEvent(routingKey, body, maxBody, notAfter)
    _optional(document, "seq", _count)
    for name in ("ts", "analyzed_at", "interval"):
        _optional(document, name, _time)
    for name in ("level", "cpu_result"):
        _optional(document, name, _level)
    levels = _optional(document, "levels", _object)
    if levels:
        for subject, level in levels.items():
            if level is not None:
                _level(level, f"levels.{subject[:40]}")
    _optional(document, "metrics", _object)
    return document


# Statuses and liveness ticks (analyzer role -> web role, analyzers)

ONLINE = "online"
STALE = "stale"
OFFLINE = "offline"
MAX_STATUS_LENGTH = 32
# What every analyzer publishes into the liveness queue (never a status).
TICK = "liveness-tick"


def statusDocument(host, status, since, lastSeen, seq):
    """
    A status of C{host} as a dict (see C{docs/protocol.md}).
    """
    return {"v": VERSION, "kind": topics.STATUS, "host": host, "status": status,
            "since": since, "last_seen": lastSeen, "seq": seq}


def encodeStatus(host, status, since, lastSeen, seq):
    """
    Encode a status of C{host} (see L{statusDocument}).
    """
    return encodeJSON(statusDocument(host, status, since, lastSeen, seq))


def encodeTick(queue, ts):
    """
    Encode a liveness tick for C{queue}, sent at C{ts}.
    """
    return encodeJSON({"v": VERSION, "kind": TICK, "queue": queue, "ts": ts})


def decodeStatus(routingKey, body, maxBody=DEFAULT_MAX_BODY, notAfter=None):
    """
    Decode and validate a status received under C{routingKey}.

    Beyond L{decodeEvent}'s checks (version, kind, the host matching the
    routing key, C{since} and C{last_seen} from the future), C{status} is a
    string of 1 to L{MAX_STATUS_LENGTH} characters, C{since} and
    C{last_seen} non-negative numbers or null, C{seq} a non-negative integer
    or null.

    @return: the document, a dict.
    @raise Rejected: for anything else.
    """
    words = topics.splitKey(routingKey)
    if words is not None and words[1] != topics.STATUS:
        raise Rejected("routing-key", f"{routingKey[:80]!r} is not <host>.{topics.STATUS}")
    document = decodeEvent(routingKey, body, maxBody, notAfter)
    status = document.get("status")
    if not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_LENGTH:
        raise Rejected("type", "status: expected a short string")
    for name in ("since", "last_seen"):
        _optional(document, name, _time)
    _optional(document, "seq", _count)
    return document


# History points (web role -> clients)

FULL = "full"
OVERVIEW = "overview"
# A host with more cores than this keeps only the first ones in its history.
MAX_CORES = 256
# A history point's encoding keeps historyPoint's key order (ts, seq, cpu,
# mem, cores, ...): overviewPoint cuts [ts,cpu,mem] out of it by these.
_TS_PREFIX = b'{"ts":'
_SEQ = b',"seq":'
_CPU = b',"cpu":'
_MEM = b',"mem":'
_CORES = b',"cores":'


def _pointNumber(value, digits):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    if digits is None:
        return float(value)
    rounded = round(value, digits)
    return int(rounded) if digits == 0 else rounded


def _dig(document, *path):
    # Metrics are forwarded as received (a third party's analysis may carry
    # anything there): what is not where expected becomes null in a point.
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _pointLevel(value):
    return value if isinstance(value, str) and len(value) <= 16 else None


def historyPoint(analysis, now):
    """
    The compact history point of one analysis document, as a dict.

    @param now: the time used when the analysis carries neither C{ts} nor
        C{analyzed_at} (a proof-of-concept measure's analysis).
    """
    # ts is kept exact: it identifies the analysis, as seq does.
    ts = _pointNumber(analysis.get("ts"), None)
    if ts is None:
        ts = _pointNumber(analysis.get("analyzed_at"), None)
    if ts is None:
        ts = now
    seq = analysis.get("seq")
    metrics = analysis.get("metrics")
    cores = _dig(metrics, "cpu", "per_core")
    disks = _dig(metrics, "disks")
    load = _dig(metrics, "load")
    diskPercents = [
        p for p in (_pointNumber(_dig(d, "percent"), 1) for d in disks) if p is not None
    ] if isinstance(disks, list) else []
    levels = analysis.get("levels")
    return {
        "ts": ts,
        "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        "cpu": _pointNumber(_dig(metrics, "cpu", "percent"), 1),
        "mem": _pointNumber(_dig(metrics, "memory", "percent"), 1),
        "cores": [_pointNumber(c, 1) for c in cores[:MAX_CORES]] if isinstance(cores, list) else [],
        "load1": _pointNumber(load[0], 2) if isinstance(load, list) and load else None,
        "disk": max(diskPercents) if diskPercents else None,
        "rx": _pointNumber(_dig(metrics, "net_io", "bytes_recv_per_s"), 0),
        "tx": _pointNumber(_dig(metrics, "net_io", "bytes_sent_per_s"), 0),
        "level": _pointLevel(analysis.get("level")),
        "levels": {
            "cpu": _pointLevel(_dig(levels, "cpu")),
            "memory": _pointLevel(_dig(levels, "memory")),
        },
    }


def encodePoint(point):
    """
    Encode a history point (L{historyPoint}).
    """
    return encodeJSON(point)


def overviewPoint(encoded):
    """
    The overview of an encoded point (which starts C{{"ts":<number>,"seq":}):
    C{[ts,cpu,mem]} as bytes, the numbers exactly as the point's JSON spells
    them.
    """
    seqAt = encoded.index(_SEQ, len(_TS_PREFIX))
    cpuAt = encoded.index(_CPU, seqAt)
    memAt = encoded.index(_MEM, cpuAt)
    coresAt = encoded.index(_CORES, memAt)
    return b"".join([
        b"[", encoded[len(_TS_PREFIX):seqAt], b",", encoded[cpuAt + len(_CPU):memAt],
        b",", encoded[memAt + len(_MEM):coresAt], b"]"])


# Bodies made of bodies already encoded (web role -> clients): events are
# sent as the bytes received, history points as encoded when they arrived.


def jsonArray(bodies):
    """
    A JSON array of C{bodies} (a list of encoded JSON values), as bytes.
    """
    return b"[" + b",".join(bodies) + b"]"


def arrayPieces(bodies):
    """
    The pieces of the JSON array of C{bodies}, one body at a time.
    """
    yield b"["
    first = True
    for body in bodies:
        if not first:
            yield b","
        first = False
        yield body
    yield b"]"


def historyKey(host):
    """
    C{"<host>":}, the start of a host's entry in a C{history} object.
    """
    return encodeJSON(host) + b":"


def snapshotPieces(subscription, analyses, statuses, history=None, alerts=None, recent=None):
    """
    The pieces of a C{snapshot} message: C{subscription} (a dict, as the
    server understood it), C{events} (the bodies of the latest analyses),
    C{statuses} (the bodies of the latest statuses), C{history} (the pieces
    of a history object, or L{None} for C{{}}).
    """
    yield b'{"kind":"snapshot","subscription":' + encodeJSON(subscription) + b',"events":'
    yield from arrayPieces(analyses)
    yield b',"statuses":'
    yield from arrayPieces(statuses)
    yield b',"history":'
    if history is None:
        yield b"{}"
    else:
        yield from history
    if alerts is not None:
        yield b',"alerts":'
        yield from arrayPieces(alerts)
    if recent is not None:
        yield b',"recent":'
        yield from arrayPieces(recent)
    yield b"}"


def analysesSnapshotBody(analyses):
    """
    A snapshot of the latest analyses only, C{analyses} being their JSON
    array as bytes.
    """
    return b'{"kind":"snapshot","events":' + analyses + b"}"


def historyReplyBody(host, step, points):
    """
    The reply to a WebSocket C{history} request: C{points} is the JSON
    array of C{host}'s points (bytes), at most one per C{step} seconds.
    """
    return b"".join([
        b'{"kind":"history","host":', encodeJSON(host), b',"step":', encodeJSON(step),
        b',"points":', points, b"}"])


def errorMessage(text, **details):
    """
    A WebSocket C{error} message: C{{"kind": "error", "error": text, ...}}.
    """
    return encodeJSON(dict({"kind": "error", "error": text}, **details))


# HTTP API bodies (web role -> programs)


def errorBody(text, **details):
    """
    The body of an HTTP error answer: C{{"error": text, ...details}}.
    """
    return encodeJSON(dict({"error": text}, **details))


def hostBody(host, analysis, status):
    """
    C{GET /api/hosts/<host>}: C{analysis} and C{status} are the bodies of
    the host's latest ones, or L{None}.
    """
    return b"".join([
        b'{"host":', encodeJSON(host), b',"analysis":', analysis or b"null",
        b',"status":', status or b"null", b"}"])


def hostsPieces(analyses, statuses):
    """
    The pieces of C{GET /api/hosts}: the bodies of every latest analysis
    and status.
    """
    yield b'{"hosts":'
    yield from arrayPieces(analyses)
    yield b',"statuses":'
    yield from arrayPieces(statuses)
    yield b"}"


def hostHistoryBody(host, window, step, points):
    """
    C{GET /api/hosts/<host>/history}: C{points} is the JSON array of the
    host's points (bytes).
    """
    return b"".join([
        b'{"host":', encodeJSON(host), b',"window":', encodeJSON(window),
        b',"step":', encodeJSON(step), b',"points":', points, b"}"])


def eventsPieces(bodies):
    """
    The pieces of C{GET /api/events}: C{{"events": [<event bodies, oldest
    first>]}}.
    """
    yield b'{"events":'
    yield from arrayPieces(bodies)
    yield b"}"


def eventsBody(bodies):
    """
    C{GET /api/events} whole (see L{eventsPieces}).
    """
    return b"".join(eventsPieces(bodies))


def alertsBody(bodies):
    """
    C{GET /api/alerts}: C{{"alerts": [<firing alert bodies>]}}.
    """
    return b'{"alerts":' + jsonArray(bodies) + b"}"


# Server-Sent Events frames (web role -> programs)

SSE_KEEPALIVE = b": keep-alive\n\n"
# The snapshot event, written in pieces: its JSON is one data: line.
SSE_SNAPSHOT_BEGIN = b"event: snapshot\ndata: "
SSE_SNAPSHOT_END = b"\n\n"


def sseRetry(milliseconds):
    """
    The SSE field telling an EventSource how long to wait before reconnecting.
    """
    return b"retry: %d\n\n" % (milliseconds,)


def sseFrame(kind, body):
    """
    One SSE event: C{event: <kind>} and the JSON body on one C{data:} line.
    A JSON text holds line breaks only as white space (a string escapes
    them), so they are written as spaces: an event costs its body's bytes
    and a few more, however many line breaks a publisher put in it (as one
    C{data:} line each, a body of line breaks grew sevenfold).
    """
    return b"event: " + kind.encode("ascii") + b"\ndata: " + sseData(body) + b"\n\n"


def sseData(chunk):
    """
    A piece of JSON for a C{data:} line (an event's, or a piece of the
    snapshot's): the line breaks it may hold are JSON white space, written
    as spaces.
    """
    if b"\n" in chunk or b"\r" in chunk:
        chunk = chunk.replace(b"\r", b" ").replace(b"\n", b" ")
    return chunk


# Clients' messages (clients -> web role): WebSocket messages and the query
# parameters of /ws and /api/stream


class InvalidRequest(ValueError):
    """
    A client's message or query parameters that cannot be honoured; the
    message says why.
    """


SUBSCRIBE = "subscribe"
HISTORY = "history"
# Several events in one WebSocket message (/ws?batch=1): resmon.webserver.batches.
BATCH = "batch"
EVENT_KINDS = (topics.ANALYSIS, topics.STATUS)
# Every kind a client may ask for: rules' events and alerts only when asked.
STREAM_KINDS = EVENT_KINDS + (topics.EVENT, topics.ALERT)
MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 255
# The values of a subscription's history field, as on the wire.
HISTORY_FULL = True
HISTORY_NONE = False
HISTORY_OVERVIEW = OVERVIEW
# What a client that asks for nothing gets: cheap enough for a whole fleet
# (at most 91 [ts, cpu, mem] per host for 15 minutes).
DEFAULT_HISTORY = HISTORY_OVERVIEW
MAX_STEP = 86400.0
# A smaller step than this divides a time into numbers too large for a float.
MIN_STEP = 0.001


@dataclass(frozen=True)
class SubscribeRequest:
    """
    A client's C{subscribe} message (or query parameters), validated.

    @ivar hosts: host names or patterns, or L{None} for every host.
    @ivar events: the event kinds wanted (some of L{EVENT_KINDS}).
    @ivar history: L{HISTORY_FULL}, L{HISTORY_OVERVIEW} or L{HISTORY_NONE}.
    @ivar since: only history points after this time, or L{None}.
    @ivar step: seconds between history points, or L{None} for the default.
    """

    hosts: object = None
    events: tuple = EVENT_KINDS
    history: object = DEFAULT_HISTORY
    since: object = None
    step: object = None


@dataclass(frozen=True)
class HistoryRequest:
    """
    A WebSocket client's one-off request for the history of one host.

    @ivar host: the host's name or routing word, as asked.
    @ivar step: at most one point per C{step} seconds (0: every point).
    """

    host: str
    step: float = 0


def subscriptionDocument(hosts, events, history, step, since):
    """
    The C{subscription} of a snapshot, as the server understood it: every
    field, C{hosts} L{None} for every host, C{events} in the order of
    L{EVENT_KINDS}.
    """
    return {
        "hosts": None if hosts is None else list(hosts),
        "events": [kind for kind in STREAM_KINDS if kind in events],
        "history": history,
        "step": step,
        "since": since,
    }


def decodeClientMessage(payload):
    """
    Decode a WebSocket text message from a client (bytes).

    @return: a L{SubscribeRequest} or a L{HistoryRequest}.
    @raise InvalidRequest: naming what is wrong.
    """
    try:
        message = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InvalidRequest("not a JSON text message")
    if not isinstance(message, dict):
        raise InvalidRequest("a message must be a JSON object")
    kind = message.get("kind")
    if kind == SUBSCRIBE:
        return decodeSubscribe(message)
    if kind == HISTORY:
        return decodeHistoryRequest(message)
    raise InvalidRequest(
        f"unknown message kind {str(kind)[:40]!r}; expected {SUBSCRIBE!r} or {HISTORY!r}")


def decodeHistoryRequest(message):
    """
    The L{HistoryRequest} of a decoded C{{"kind": "history", "host": ...}}
    message (C{step} defaults to 0).

    @raise InvalidRequest: naming the field at fault.
    """
    if not isinstance(message, dict):
        raise InvalidRequest("a message must be a JSON object")
    unknown = set(message) - {"kind", "host", "step"}
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0][:40]!r}")
    host = message.get("host")
    if not isinstance(host, str) or not 1 <= len(host) <= MAX_PATTERN_LENGTH:
        raise InvalidRequest(
            f"host: expected a host name or routing word of 1 to {MAX_PATTERN_LENGTH} characters")
    return HistoryRequest(host, decodeStep(message.get("step", 0)))


def decodeSubscribe(message):
    """
    The L{SubscribeRequest} of a decoded C{{"kind": "subscribe", ...}}
    message. Absent fields take their defaults: every host, every kind,
    an overview history, the default step.

    @raise InvalidRequest: naming the field at fault.
    """
    if not isinstance(message, dict):
        raise InvalidRequest("a message must be a JSON object")
    unknown = set(message) - {"kind", "hosts", "events", "history", "since", "step"}
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0][:40]!r}")
    hosts = _strings(message, "hosts", "host names or patterns")
    if hosts is not None:
        hosts = tuple(_patterns(hosts))
    events = _strings(message, "events", "event kinds")
    events = EVENT_KINDS if events is None else tuple(_kinds(events))
    history = message.get("history", DEFAULT_HISTORY)
    if not (isinstance(history, bool) or history == HISTORY_OVERVIEW):
        raise InvalidRequest('history: expected true, false or "overview"')
    since = message.get("since")
    if since is not None and not _finiteNumber(since):
        raise InvalidRequest("since: expected a number (seconds since the epoch)")
    step = message.get("step")
    if step is not None:
        step = decodeStep(step)
    return SubscribeRequest(hosts, events, history, since, step)


def decodeStep(step):
    """
    A history step: 0 (every point), or a number of seconds from
    L{MIN_STEP} to L{MAX_STEP}.

    @raise InvalidRequest: for anything else.
    """
    if not _finiteNumber(step) or not (step == 0 or MIN_STEP <= step <= MAX_STEP):
        raise InvalidRequest(
            f"step: expected a number of seconds: 0 (every point) or {MIN_STEP:g} to {MAX_STEP:.0f}")
    return step


def decodeQuery(args):
    """
    The L{SubscribeRequest} of query parameters (a twisted.web
    C{request.args}: bytes keys, lists of bytes values; or Autobahn's
    C{params}: str keys and values): C{hosts=} and C{events=}
    comma-separated, C{history=0|1|overview}, C{since=}, C{step=}.

    @raise InvalidRequest: naming the parameter at fault.
    """
    values = {}
    for key, found in args.items():
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        found = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in found]
        values[key] = ",".join(found)
    unknown = set(values) - {"hosts", "events", "history", "since", "step"}
    if unknown:
        raise InvalidRequest(f"unknown parameter {sorted(unknown)[0][:40]!r}")
    message = {}
    if "hosts" in values:
        message["hosts"] = [p for p in values["hosts"].split(",") if p]
    if "events" in values:
        message["events"] = [e for e in values["events"].split(",") if e]
    if "history" in values:
        flag = values["history"].lower()
        if flag == HISTORY_OVERVIEW:
            message["history"] = HISTORY_OVERVIEW
        elif flag in ("0", "1", "true", "false"):
            message["history"] = flag in ("1", "true")
        else:
            raise InvalidRequest("history: expected 0, 1 or overview")
    for name, what in (("since", "seconds since the epoch"), ("step", "seconds")):
        if name in values:
            try:
                message[name] = float(values[name])
            except ValueError:
                raise InvalidRequest(f"{name}: expected a number ({what})")
    return decodeSubscribe(message)


def _finiteNumber(value):
    return _isNumber(value) and math.isfinite(value)


def _strings(message, field, what):
    """
    C{message[field]} as a list of strings (one string counts as a list of
    one), or L{None} if absent.
    """
    value = message.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequest(f"{field}: expected a list of {what}")
    return value


def _patterns(patterns):
    if not patterns:
        raise InvalidRequest("hosts: empty list (leave it out for every host)")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidRequest(f"hosts: at most {MAX_PATTERNS} patterns")
    for pattern in patterns:
        if not 1 <= len(pattern) <= MAX_PATTERN_LENGTH:
            raise InvalidRequest(f"hosts: a pattern must be 1 to {MAX_PATTERN_LENGTH} characters")
        for word in pattern.split("."):
            if word not in ("*", "#") and ("*" in word or "#" in word):
                raise InvalidRequest(
                    f"hosts: {pattern[:60]!r}: '*' and '#' match whole words only "
                    "(AMQP topic syntax, not a glob)")
    return patterns


def _kinds(events):
    if not events:
        raise InvalidRequest("events: empty list (leave it out for every kind)")
    for kind in events:
        if kind not in STREAM_KINDS:
            raise InvalidRequest(
                f"events: unknown kind {kind[:40]!r}; expected {', '.join(STREAM_KINDS)}")
    return events


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
    words = topics.splitKey(routingKey)
    decode = decodeStatus if words and words[-1] == topics.STATUS else decodeAnalysis
    try:
        return decode(routingKey, body, maxBody, notAfter), False
    except Rejected as e:
        if e.reason != "version" or not routingKey.endswith("." + topics.ANALYSIS):
            raise
        try:
            return decodeLegacyAnalysis(routingKey, body, receivedAt, maxBody), True
        except Rejected:
            raise e


# Webhooks (resmon.webhooks, docs/webhooks.md).

# The routing key of a test delivery (POST /api/webhooks/<id>/ping).
WEBHOOK_PING_KEY = "resmon.ping"
# The routing key of the events about webhooks themselves (one disabled).
WEBHOOK_EVENT_KEY = "resmon.webhook"


def webhookPayload(delivery, hook, routingKey, ts, event):
    """
    The body POSTed to a webhook: the same for every attempt of one
    delivery (the signature, over a timestamp, changes).

    @param event: the event as received from the bus, decoded.
    """
    return webhookPayloadOf(delivery, hook, routingKey, ts, _dumps(event))


def webhookPayloadOf(delivery, hook, routingKey, ts, eventJSON):
    """
    L{webhookPayload}, the event given as its JSON (L{encodeJSON} of it),
    made once for all the hooks it goes to: the same bytes.
    """
    head = _dumps({"v": VERSION, "delivery": delivery, "hook": hook, "key": routingKey, "ts": ts})
    return head[:-1] + b',"event":' + eventJSON + b"}"


def webhookPingEvent(ts):
    """
    The event of a test delivery.
    """
    return {"v": VERSION, "kind": "ping", "ts": ts}


def webhookStateEvent(hook, key, url, state, ts, reason):
    """
    The C{resmon.webhook} event published when a hook changes state (it is
    disabled), so that rules and other hooks can react.
    """
    return _dumps({"v": VERSION, "kind": "webhook", "hook": hook, "key": key, "url": url,
                   "state": state, "ts": ts, "reason": reason})


# Events (HTTP POST /api/events/<source> and rules -> rules, web role):
# the versioned envelope of anything that happened, published under
# <source>.<kind> (kind "event" for what comes in over HTTP, "alert" for the
# alert rule's, any other word but measure, analysis and status for rules).

EVENT_ID_LENGTH = 64
MAX_SOURCE_LENGTH = 64
MAX_CONTENT_TYPE = 255
# How many rule names an event's chain lists (the depth goes on counting).
MAX_CHAIN_RULES = 64
DEFAULT_MAX_CHAIN = 8
JSON_ENCODING, TEXT_ENCODING, BASE64_ENCODING = "json", "text", "base64"
PAYLOAD_ENCODINGS = (JSON_ENCODING, TEXT_ENCODING, BASE64_ENCODING)
# Kinds only resmon's own roles publish, in their own formats.
RESERVED_KINDS = (topics.MEASURE, topics.ANALYSIS, topics.STATUS)
_TEXT_TYPES = ("application/xml", "application/x-www-form-urlencoded", "application/csv",
               "application/x-ndjson", "application/yaml", "application/javascript")
# Bytes an envelope may add to its payload beyond base64's third.
ENVELOPE_OVERHEAD = 8192


def envelopeLimit(maxBody):
    """
    The largest envelope (bytes) of a payload of at most C{maxBody} bytes:
    an envelope that would be larger carries its payload in base64.
    """
    return (maxBody + 2) // 3 * 4 + ENVELOPE_OVERHEAD


@dataclass(frozen=True)
class Chain:
    """
    How an event came to be: the rules whose actions led to it, in order
    (the last one emitted it), and how many actions deep it is (0: from
    outside resmon's rules).
    """

    rules: tuple = ()
    depth: int = 0

    def then(self, rule):
        """
        The chain of an event emitted by C{rule} acting on an event of this chain.
        """
        rules = (self.rules + (rule,))[-MAX_CHAIN_RULES:]
        return Chain(rules, self.depth + 1)

    def document(self):
        return {"rules": list(self.rules), "depth": self.depth}


ROOT_CHAIN = Chain()


@dataclass(frozen=True)
class Event:
    """
    Anything on the bus a rule can react to: an event envelope, or a
    measure, analysis or status seen as one.

    @ivar key: the routing key it came under.
    @ivar kind: the key's last word (C{event}, C{alert}, C{analysis}, ...).
    @ivar source: the key's first word (the host of a measure, analysis,
        status or alert).
    @ivar id: the envelope's unique id (L{None} for measures, analyses and
        statuses).
    @ivar ts: when it happened (seconds since the epoch), or L{None}.
    @ivar contentType: the payload's media type.
    @ivar encoding: how the payload is carried: C{json} (a decoded JSON
        value), C{text} (a L{str}) or C{base64} (a L{str}; L{data} decodes it).
    @ivar payload: as C{encoding} says; for a measure, analysis or status,
        its decoded document.
    @ivar chain: a L{Chain}.
    """

    key: str
    kind: str
    source: str
    id: object
    ts: object
    contentType: str
    encoding: str
    payload: object
    chain: Chain = ROOT_CHAIN

    @property
    def data(self):
        """
        The payload as bytes: decoded from base64, UTF-8 text, or JSON.
        """
        if self.encoding == BASE64_ENCODING:
            return base64.b64decode(self.payload)
        if self.encoding == TEXT_ENCODING:
            return self.payload.encode("utf-8")
        return _dumps(self.payload)


def eventSource(name):
    """
    The routing-key word of an event source named C{name} (sanitized as host
    names are, L{topics.hostWord}).

    @raise Rejected: C{source}, for a name that cannot be made one word:
        empty, longer than L{MAX_SOURCE_LENGTH} characters, or made of no
        letter, digit, C{-} or C{_} at all.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_SOURCE_LENGTH:
        raise Rejected("source", f"a source must be 1 to {MAX_SOURCE_LENGTH} characters")
    word = topics.hostWord(name)
    if not word.strip("_"):
        raise Rejected("source", f"{name[:80]!r} has no letter, digit, '-' or '_' to make a "
                                 "routing-key word of")
    return word


def _isTextType(contentType):
    return (contentType.startswith("text/") or contentType in _TEXT_TYPES
            or contentType.endswith("+xml"))


def _isJSONType(contentType):
    return contentType == "application/json" or contentType.endswith("+json")


def eventDocument(source, kind, ts, eventId, contentType, encoding, payload, chain=ROOT_CHAIN):
    """
    An event envelope as a dict (see C{docs/protocol.md}).
    """
    return {"v": VERSION, "kind": kind, "id": eventId, "source": source, "ts": ts,
            "content_type": contentType, "encoding": encoding, "payload": payload,
            "chain": chain.document()}


def encodeEventFromBody(source, body, contentType, ts, eventId, kind=topics.EVENT,
                        chain=ROOT_CHAIN):
    """
    Encode the envelope of a payload received as C{body} (bytes) with the
    media type C{contentType} (its parameters are ignored, except that the
    body must be UTF-8 to be carried as JSON or text): decoded JSON when the
    type says JSON and the body parses, text when it is a text type (or
    unparsable JSON) and UTF-8, base64 otherwise, or whenever the envelope
    would grow past L{envelopeLimit} of the body's size.

    @return: the envelope, bytes.
    """
    mediaType = (contentType or "application/octet-stream").split(";")[0].strip().lower()
    mediaType = mediaType[:MAX_CONTENT_TYPE] or "application/octet-stream"
    encoding, payload = BASE64_ENCODING, None
    if _isJSONType(mediaType) or _isTextType(mediaType):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            encoding, payload = TEXT_ENCODING, text
            if _isJSONType(mediaType):
                try:
                    payload = json.loads(text, parse_constant=_rejectConstant,
                                         parse_float=_parseFloat)
                    encoding = JSON_ENCODING
                except (ValueError, RecursionError):
                    payload = text
    if encoding != BASE64_ENCODING:
        encoded = _dumps(eventDocument(source, kind, ts, eventId, mediaType, encoding, payload,
                                       chain))
        if len(encoded) <= envelopeLimit(len(body)):
            return encoded
    return _dumps(eventDocument(source, kind, ts, eventId, mediaType, BASE64_ENCODING,
                                base64.b64encode(body).decode("ascii"), chain))


def encodeEmitted(source, kind, ts, eventId, payload, chain=ROOT_CHAIN):
    """
    Encode the envelope of an event a rule emits: C{payload} is any JSON
    value (L{ValueError} for NaN or infinity, L{TypeError} for anything
    JSON cannot carry).
    """
    return _dumps(eventDocument(source, kind, ts, eventId, "application/json", JSON_ENCODING,
                                payload, chain))


def checkEmittedKey(routingKey):
    """
    The C{(source, kind)} of the routing key a rule emits under: two words,
    the source as L{eventSource} accepts it unchanged, and a kind that is
    one word other than those of L{RESERVED_KINDS}.

    @raise Rejected: naming what is wrong.
    """
    words = topics.splitKey(routingKey) if isinstance(routingKey, str) else None
    if words is None:
        raise Rejected("routing-key", f"{str(routingKey)[:80]!r} is not <source>.<kind>")
    source, kind = words
    if eventSource(source) != source or topics.hostWord(kind) != kind or len(kind) > 64:
        raise Rejected("routing-key", f"{routingKey[:80]!r}: each word must be made of "
                                      "letters, digits, '-' and '_' (at most 64)")
    if kind in RESERVED_KINDS:
        raise Rejected("routing-key", f"{kind!r} events are resmon's own; emit another kind")
    return source, kind


def _decodeChain(value, maxChain):
    if not isinstance(value, dict) or set(value) - {"rules", "depth"}:
        raise Rejected("type", "chain must be an object with rules and depth")
    rules = value.get("rules", [])
    if not isinstance(rules, list) or len(rules) > MAX_CHAIN_RULES or not all(
            isinstance(r, str) and 0 < len(r) <= 64 for r in rules):
        raise Rejected("type", f"chain.rules must be a list of at most {MAX_CHAIN_RULES} names")
    depth = _count(value.get("depth"), "chain.depth")
    if maxChain is not None and depth > maxChain:
        raise Rejected("chain-limit", f"chain depth {depth} is over the limit of {maxChain}")
    return Chain(tuple(rules), depth)


def decodeEventEnvelope(routingKey, body, maxBody=DEFAULT_MAX_BODY, notAfter=None,
                        maxChain=None):
    """
    Decode and validate an event envelope received under C{routingKey}
    (C{<source>.<kind>}), C{maxBody} being the limit of its payloads (the
    envelope may be up to L{envelopeLimit} of it).

    @param maxChain: the deepest chain accepted (C{chain-limit} beyond), or
        L{None} for any.
    @return: an L{Event}.
    @raise Rejected: for anything else.
    """
    words = topics.splitKey(routingKey)
    if words is None or words[1] in RESERVED_KINDS:
        raise Rejected("routing-key", f"{routingKey[:80]!r} is not <source>.<kind>")
    document = loadJSON(body, envelopeLimit(maxBody))
    if document.get("v") != VERSION:
        raise Rejected("version", f"unsupported version {str(document.get('v'))[:20]}")
    unknown = set(document) - {"v", "kind", "id", "source", "ts", "content_type", "encoding",
                               "payload", "chain"}
    if unknown:
        raise Rejected("shape", f"unknown field {sorted(unknown)[0][:40]!r}")
    if document.get("kind") != words[1]:
        raise Rejected("kind", f"kind {str(document.get('kind'))[:20]!r} under {routingKey[:80]!r}")
    if document.get("source") != words[0]:
        raise Rejected("routing-key",
                       f"source {str(document.get('source'))[:80]!r} under {routingKey[:80]!r}")
    eventId = _string(document.get("id"), "id", EVENT_ID_LENGTH)
    ts = notFromTheFuture(_number(document.get("ts"), "ts", 0), "ts", notAfter)
    contentType = _string(document.get("content_type"), "content_type", MAX_CONTENT_TYPE)
    encoding = document.get("encoding")
    if encoding not in PAYLOAD_ENCODINGS:
        raise Rejected("type", f"encoding must be one of {', '.join(PAYLOAD_ENCODINGS)}")
    if "payload" not in document:
        raise Rejected("shape", "no payload")
    payload = document["payload"]
    if encoding != JSON_ENCODING and not isinstance(payload, str):
        raise Rejected("type", f"a {encoding} payload must be a string")
    if encoding == BASE64_ENCODING:
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("encoding", "payload is not valid base64")
    chain = _decodeChain(document.get("chain", {}), maxChain)
    return Event(routingKey, words[1], words[0], eventId, ts, contentType, encoding, payload,
                 chain)


def decodeBusEvent(routingKey, body, maxBody=DEFAULT_MAX_BODY, notAfter=None, maxChain=None,
                   receivedAt=None):
    """
    Decode anything a rule may listen to as an L{Event}: a measure, an
    analysis or a status (its payload the decoded document, a measure's as
    C{host}, C{seq}, C{ts}, C{interval}, C{metrics}; a proof-of-concept
    analysis in its v1 form, L{decodeLegacyAnalysis}, dated C{receivedAt}),
    else an event envelope (L{decodeEventEnvelope}).

    @raise Rejected: as the decoder of that kind does.
    """
    words = topics.splitKey(routingKey)
    kind = words[1] if words is not None else None
    if kind == topics.MEASURE:
        measure = decodeMeasure(routingKey, body, maxBody, notAfter)
        document = {"host": measure.host, "seq": measure.seq, "ts": measure.ts,
                    "interval": measure.interval, "metrics": measure.metrics}
    elif kind in (topics.ANALYSIS, topics.STATUS):
        document, _ = decodeEventOrLegacy(routingKey, body, receivedAt, maxBody, notAfter)
    else:
        return decodeEventEnvelope(routingKey, body, maxBody, notAfter, maxChain)
    ts = document.get("ts", document.get("since"))
    return Event(routingKey, kind, words[0], None, ts, "application/json", JSON_ENCODING,
                 document)


# Notifications to users (docs/protocol.md, "Notifications"): published under
# user.<name>.notify or group.<group>.notify, sent to that user's dashboards.

NOTIFY = "notify"
NOTIFICATION = "notification"
NOTIFICATIONS = "notifications"
NOTIFY_USER, NOTIFY_GROUP = "user", "group"
MAX_NOTIFY_NAME = 64
MAX_NOTIFY_TITLE = 200
MAX_NOTIFY_TEXT = 2000
MAX_NOTIFY_BODY = 8192
NOTIFY_LEVELS = ("info", "warning", "critical")


@dataclass(frozen=True)
class Notification:
    """
    A notification for one user or every member of one group.

    @ivar audience: C{user} or C{group}; C{name}: the user's or group's name.
    @ivar host: the host it is about (only users who may see it receive it), or L{None}.
    """

    audience: str
    name: str
    id: str
    ts: float
    title: str
    text: str = ""
    level: str = "info"
    host: object = None

    @property
    def routingKey(self):
        return notifyKey(self.audience, self.name)

    def document(self):
        """
        The frame sent to a dashboard: C{{"kind": "notification", ...}}.
        """
        document = {"kind": NOTIFICATION, "id": self.id, "ts": self.ts,
                    "to": {self.audience: self.name}, "title": self.title, "text": self.text,
                    "level": self.level}
        if self.host is not None:
            document["host"] = self.host
        return document


def notifyName(name, where="name"):
    """
    Check a user or group name that must be one routing-key word.

    @raise Rejected: C{name}.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NOTIFY_NAME or topics.hostWord(name) != name:
        raise Rejected("name", f"{where} must be 1 to {MAX_NOTIFY_NAME} letters, digits, '-' or '_'")
    return name


def notifyKey(audience, name):
    """
    C{user.<name>.notify} or C{group.<name>.notify}.
    """
    return f"{audience}.{notifyName(name)}.{NOTIFY}"


def splitNotifyKey(routingKey):
    """
    The C{(audience, name)} of a notify routing key.

    @raise Rejected: C{routing-key}.
    """
    words = routingKey.split(".") if isinstance(routingKey, str) else ()
    if (len(words) != 3 or words[0] not in (NOTIFY_USER, NOTIFY_GROUP) or words[2] != NOTIFY
            or not words[1] or topics.hostWord(words[1]) != words[1]
            or len(words[1]) > MAX_NOTIFY_NAME):
        raise Rejected("routing-key", f"{str(routingKey)[:80]!r} is not user.<name>.notify "
                                      "or group.<group>.notify")
    return words[0], words[1]


def _notificationFields(document, where=""):
    title = _string(document.get("title"), where + "title", MAX_NOTIFY_TITLE)
    text = document.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_NOTIFY_TEXT:
        raise Rejected("type", f"{where}text must be a string of at most {MAX_NOTIFY_TEXT} characters")
    level = document.get("level", "info")
    if level not in NOTIFY_LEVELS:
        raise Rejected("type", f"{where}level must be one of {', '.join(NOTIFY_LEVELS)}")
    host = document.get("host")
    if host is not None:
        host = _string(host, where + "host")
    return title, text, level, host


def encodeNotification(notification):
    """
    The body published under L{Notification.routingKey}.
    """
    document = {"v": VERSION, "kind": NOTIFY, "id": notification.id, "ts": notification.ts,
                "title": notification.title, "text": notification.text,
                "level": notification.level}
    if notification.host is not None:
        document["host"] = notification.host
    return _dumps(document)


def decodeNotification(routingKey, body, maxBody=MAX_NOTIFY_BODY, notAfter=None):
    """
    Decode a notification received under C{routingKey}.

    @return: a L{Notification}.
    @raise Rejected: for anything that is not exactly one.
    """
    audience, name = splitNotifyKey(routingKey)
    document = loadJSON(body, maxBody)
    if document.get("v") != VERSION:
        raise Rejected("version", f"unsupported version {str(document.get('v'))[:20]}")
    unknown = set(document) - {"v", "kind", "id", "ts", "title", "text", "level", "host"}
    if unknown:
        raise Rejected("shape", f"unknown field {sorted(unknown)[0][:40]!r}")
    if document.get("kind") != NOTIFY:
        raise Rejected("kind", f"kind {str(document.get('kind'))[:20]!r} under {routingKey[:80]!r}")
    eventId = _string(document.get("id"), "id", EVENT_ID_LENGTH)
    ts = notFromTheFuture(_number(document.get("ts"), "ts", 0), "ts", notAfter)
    title, text, level, host = _notificationFields(document)
    return Notification(audience, name, eventId, ts, title, text, level, host)


def decodeNotifyRequest(body, ts, eventId):
    """
    The L{Notification} a C{POST /api/notify} body asks for: a JSON object
    with C{user} or C{group} (one of them), C{title}, and optionally
    C{text}, C{level} and C{host}.

    @raise Rejected: naming the field at fault.
    """
    document = loadJSON(body, MAX_NOTIFY_BODY)
    unknown = set(document) - {"user", "group", "title", "text", "level", "host"}
    if unknown:
        raise Rejected("shape", f"unknown field {sorted(unknown)[0][:40]!r}")
    if ("user" in document) == ("group" in document):
        raise Rejected("shape", "give either user or group")
    audience = NOTIFY_USER if "user" in document else NOTIFY_GROUP
    name = notifyName(document[audience], audience)
    title, text, level, host = _notificationFields(document)
    return Notification(audience, name, eventId, ts, title, text, level, host)


def notificationsBody(documents):
    """
    The frame listing a user's last notifications at connect, oldest first:
    C{{"kind": "notifications", "notifications": [...]}}.
    """
    return encodeJSON({"kind": NOTIFICATIONS, "notifications": list(documents)})
