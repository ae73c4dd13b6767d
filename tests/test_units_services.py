"""
Unit tests of the services with Twisted's fakes: Clock, fake buses and
samplers, the options parser.
"""

import json
import os
import tempfile
from collections import namedtuple

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from fakebus import SettlingBus
from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.bus.local import LocalBus
from resmon.webserver.fanout import ClientFlow, EventFanout
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.agent.sampler import Sampler
from resmon.services.analyzer import AnalyzerService
from resmon.services.agent import TrackerService
from resmon.tap import Options


class RecordingBus(SettlingBus):
    """
    A bus that records what is published and lets the test settle it.
    """

    @property
    def subscribed(self):
        return self.last.patterns, self.last.handler, self.last.options


class FixedSampler:
    def sample(self):
        return {"cpu": {"percent": 10.0, "per_core": [10.0]}}


def test_tracker_publishes_one_measure_per_interval_with_increasing_seq():
    clock, bus = Clock(), RecordingBus()
    tracker = TrackerService(bus, FixedSampler(), "web-01.example", 0.5, clock,
                             wallClock=lambda: 1000.0 + clock.seconds())
    tracker.startService()
    assert bus.published == []  # the first sample waits one interval (at most 1 s)
    for _ in range(3):
        clock.advance(0.5)
    keys = [key for key, _, _ in bus.published]
    assert keys == ["web-01_example.measure"] * 3
    measures = [wire.decodeMeasure(key, body) for key, body, _ in bus.published]
    assert [m.seq for m in measures] == [0, 1, 2]
    assert [m.ts for m in measures] == [1000.5, 1001.0, 1001.5]
    assert measures[0].host == "web-01.example"
    bus.published[0][2].callback(None)
    bus.published[1][2].errback(Exception("dropped"))
    assert tracker.counters == {"sampled": 3, "confirmed": 1, "dropped": 1, "failed": 0,
                                "refused": 0}
    tracker.stopService()
    assert clock.getDelayedCalls() == []


def test_tracker_survives_a_failing_sampler():
    class Broken:
        def sample(self):
            raise OSError("psutil exploded")
    clock, bus = Clock(), RecordingBus()
    tracker = TrackerService(bus, Broken(), "h", 1.0, clock)
    tracker.startService()
    clock.advance(1.0)
    clock.advance(1.0)
    assert tracker.counters["failed"] == 2 and bus.published == []
    tracker.stopService()


def test_analyzer_acks_only_after_its_analysis_is_published_and_counts_rejects():
    bus = RecordingBus()
    service = AnalyzerService(bus, AnalysisPipeline([UsageAnalyzer()]), Clock())
    service.startService()
    patterns, handler, kwargs = bus.subscribed
    assert patterns == ["#.measure"] and kwargs["durable"] and kwargs["queue"] == "resmon.analyzer"
    result = handler("h.measure", b'{"cpu_percentage": 80}')
    assert not result.called  # not acknowledged until the bus confirms
    key, body, published = bus.published[0]
    assert key == "h.analysis" and json.loads(body)["cpu_result"] == "HIGH"
    published.callback(None)
    assert result.called
    assert handler("h.measure", b"junk") is None
    assert handler("a.b.measure", b"{}") is None
    assert dict(service.rejected) == {"json": 1, "routing-key": 1}
    service.stopService()


def test_analyzer_asks_for_redelivery_when_publishing_fails():
    from resmon.bus.delivery import Retry
    bus = RecordingBus()
    service = AnalyzerService(bus, AnalysisPipeline([UsageAnalyzer()]), Clock())
    service.startService()
    result = bus.subscribed[1]("h.measure", b'{"cpu_percentage": 1}')
    bus.published[0][2].errback(Exception("outbox full"))
    failures = []
    result.addErrback(failures.append)
    assert failures and failures[0].check(Retry)
    service.stopService()


def test_local_bus_delivers_asynchronously_and_redelivers_on_retry():
    from resmon.bus.delivery import Retry
    clock = Clock()
    bus = LocalBus(clock)
    seen = []

    def handler(key, body):
        seen.append(body)
        if len(seen) == 1:
            raise Retry("try again")
    bus.subscribe(["#"], handler, queue="q", prefetch=1)
    bus.publish("a.b", b"x")
    assert seen == []  # never from inside publish()
    clock.advance(0)
    clock.advance(0)
    assert seen == [b"x", b"x"]


def test_local_bus_respects_prefetch():
    clock = Clock()
    bus = LocalBus(clock)
    pending = []
    bus.subscribe(["#"], lambda key, body: pending.append(defer.Deferred()) or pending[-1], prefetch=2)
    for i in range(5):
        bus.publish("k", b"%d" % i)
    clock.advance(0)
    assert len(pending) == 2
    pending[0].callback(None)
    clock.advance(0)
    assert len(pending) == 3


class FakeClient:
    def __init__(self):
        self.sent = []

    def sendEvent(self, document, body):
        self.sent.append(body)


def _analysis(host, seq, ts=1.0):
    return json.dumps({"v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts}).encode()


def test_fanout_keeps_latest_per_host_drops_duplicates_and_rejects_junk():
    fanout = EventFanout()
    client = FakeClient()
    fanout.attach(client)
    fanout.eventReceived("a.analysis", _analysis("a", 1))
    fanout.eventReceived("a.analysis", _analysis("a", 1))  # redelivered
    fanout.eventReceived("b.analysis", _analysis("b", 7))
    fanout.eventReceived("a.analysis", b"junk")
    fanout.eventReceived("a.status", _analysis("a", 2))  # kind does not match the key
    assert client.sent == [_analysis("a", 1), _analysis("b", 7)]
    assert fanout.counters["duplicates"] == 1
    assert dict(fanout.rejected) == {"json": 1, "kind": 1}
    snapshot = json.loads(fanout.latest.snapshotBody())
    assert snapshot["kind"] == "snapshot"
    assert [e["host"] for e in snapshot["events"]] == ["a", "b"]


def test_client_flow_keeps_latest_per_host_while_paused_and_drops_stalled_clients():
    clock, sent, dropped = Clock(), [], []
    flow = ClientFlow(sent.append, lambda: dropped.append(True), clock, stallTimeout=30)
    flow.send("a", b"a1")
    flow.pauseProducing()
    for i in range(1000):
        flow.send("a", b"a%d" % i)
        flow.send("b", b"b%d" % i)
    assert len(flow.pending) == 2  # bounded by the number of hosts
    flow.resumeProducing()
    assert sent == [b"a1", b"a999", b"b999"]
    flow.pauseProducing()
    clock.advance(30)
    assert dropped == [True] and flow.pending == {}
    assert clock.getDelayedCalls() == []


SDiskPart = namedtuple("SDiskPart", "device mountpoint fstype")
SUsage = namedtuple("SUsage", "total used free percent")
SMem = namedtuple("SMem", "total used available percent")
SSwap = namedtuple("SSwap", "total used free percent")
SDiskIO = namedtuple("SDiskIO", "read_bytes write_bytes read_count write_count")
SNetIO = namedtuple("SNetIO", "bytes_sent bytes_recv packets_sent packets_recv")


class FakePsutil:
    def __init__(self):
        self.io = 0
        self.partitionReads = 0
        self.nowrap = []

    def cpu_percent(self, interval=None, percpu=False):
        assert interval is None  # never block the reactor
        return [10.0, 30.0] if percpu else 20.0

    def virtual_memory(self):
        return SMem(100, 40, 60, 40.0)

    def swap_memory(self):
        return SSwap(10, 0, 10, 0.0)

    def getloadavg(self):
        return (0.5, 0.25, 0.125)

    def disk_partitions(self, all=False):
        self.partitionReads += 1
        return [SDiskPart("/dev/sda1", "/", "ext4"), SDiskPart("tmpfs", "/run", "tmpfs"),
                SDiskPart("/dev/sda1", "/bind", "ext4")]

    def disk_usage(self, path):
        return SUsage(1000, 250, 750, 25.0)

    def disk_io_counters(self, nowrap=True):
        self.nowrap.append(nowrap)
        self.io += 1000
        return SDiskIO(self.io, 2 * self.io, self.io // 100, self.io // 100)

    def net_io_counters(self, nowrap=True):
        self.nowrap.append(nowrap)
        return SNetIO(self.io, self.io, 1, 1)


def test_sampler_computes_rates_from_deltas():
    now = [100.0]
    sampler = Sampler(FakePsutil(), monotonic=lambda: now[0])
    first = sampler.sample()
    assert first["disk_io"]["read_bytes_per_s"] is None
    assert first["cpu"] == {"percent": 20.0, "per_core": [10.0, 30.0]}
    assert [d["mount"] for d in first["disks"]] == ["/"]
    now[0] += 2.0
    second = sampler.sample()
    assert second["disk_io"]["read_bytes_per_s"] == 500.0
    assert second["disk_io"]["write_bytes_per_s"] == 1000.0
    assert second["net_io"]["bytes_sent_per_s"] == 500.0
    assert second["load"] == [0.5, 0.25, 0.12] or second["load"] == [0.5, 0.25, 0.13]
    wire.validateMetrics(second)


def test_sampler_reads_the_mounts_again_only_after_a_while():
    """
    The list of mounted filesystems is reused for PARTITIONS_REFRESH seconds
    (their usage is read every sample), and psutil is spared its own
    bookkeeping of wrapped counters: a counter that went backwards (it
    wrapped, or a disk went away) gives no rate.
    """
    from resmon.agent.sampler import PARTITIONS_REFRESH
    now = [100.0]
    fake = FakePsutil()
    sampler = Sampler(fake, monotonic=lambda: now[0])
    sampler.sample()
    now[0] += PARTITIONS_REFRESH - 1
    assert [d["mount"] for d in sampler.sample()["disks"]] == ["/"]
    assert fake.partitionReads == 1
    now[0] += 1
    sampler.sample()
    assert fake.partitionReads == 2
    now[0] -= 1000  # a clock going back never freezes the list
    sampler.sample()
    assert fake.partitionReads == 3
    assert set(fake.nowrap) == {False}
    fake.io -= 10_000
    now[0] += 1
    assert sampler.sample()["disk_io"]["read_bytes_per_s"] is None


@pytest.mark.parametrize("argv, message", [
    (["--role=bogus"], "--role: unknown role 'bogus'"),
    (["--interval=0.01"], "--interval: must be between 0.1"),
    (["--interval=abc"], "--interval: expected a number"),
    (["--port=99999"], "--port: must be between"),
    (["--broker=http://x"], "--broker: 'http://x' must start with amqp://"),
    (["--cpu-thresholds=80,20"], "--cpu-thresholds must satisfy"),
    (["--analyzer-option=novalue"], "--analyzer-option: expected NAME.KEY=VALUE"),
    (["--nonsense"], "option --nonsense not recognized"),
    (["--tls-ca=/etc/hostname"], "--tls-ca: only for an amqps:// --broker"),
    (["--role=agent", "--tls-cert=x.pem"], "--tls-cert: only for an amqps:// --broker"),
    (["--broker=amqps://rabbit", "--tls-ca=/nonexistent/ca.pem"], "--tls-ca: cannot read /nonexistent/ca.pem"),
    (["--broker=amqps://rabbit", "--tls-ca=/etc/hostname"], "--tls-ca: no PEM certificate in /etc/hostname"),
    (["--broker=amqps://rabbit", "--tls-key=/etc/hostname"], "--tls-key: needs --tls-cert"),
    (["--broker=amqps://rabbit", "--tls-cert=/etc/hostname"], "--tls-cert: /etc/hostname: no usable"),
    (["--max-clock-skew=abc"], "--max-clock-skew: expected a number"),
    (["--max-clock-skew=0"], "--max-clock-skew: must be between"),
    (["--max-clock-skew=nan"], "--max-clock-skew: must be between"),
])
def test_bad_options_stop_with_one_line_naming_the_option(argv, message):
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(argv)
    text = str(e.value.code)
    assert message in text and "\n" not in text


def test_default_options_are_standalone_without_broker():
    options = Options()
    options.parseOptions([])
    assert options["role"] == "standalone" and options["broker"] is None
    assert options["port"] == 8080 and options["interval"] == 1.0
    options = Options()
    options.parseOptions(["--role=agent"])
    assert options["broker"].host == "localhost" and options["broker"].port == 5672


def test_amqps_broker_gets_tls_options_verifying_its_host():
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

    from certificates import authority, issue
    options = Options()
    options.parseOptions(["--role=agent", "--broker=amqps://u:p@rabbit.example/prod"])
    broker = options["broker"]
    assert (broker.tls, broker.port, broker.redacted()) == (True, 5671, "amqps://u@rabbit.example:5671/prod")
    assert IOpenSSLClientConnectionCreator.providedBy(options["tls"])
    assert options["tls"]._hostname == "rabbit.example"
    options = Options()
    options.parseOptions(["--role=agent"])
    assert options["tls"] is None
    # A CA bundle of two, and a client certificate with its key in one file.
    ca, other = authority("one"), authority("two")
    client = issue(ca, "agent", client=True)
    with tempfile.TemporaryDirectory() as directory:
        bundle = os.path.join(directory, "ca.pem")
        combined = os.path.join(directory, "client.pem")
        with open(bundle, "wb") as f:
            f.write(ca.certificatePEM + other.certificatePEM)
        with open(combined, "wb") as f:
            f.write(client.certificatePEM + client.keyPEM)
        options = Options()
        options.parseOptions(["--role=agent", "--broker=amqps://10.0.0.5:5999/",
                              f"--tls-ca={bundle}", f"--tls-cert={combined}"])
        assert options["broker"].port == 5999 and options["tls"] is not None


def test_partition_options():
    options = Options()
    options.parseOptions(["--role=analyzer", "--partitions=8", "--own-partitions=0-2,5"])
    assert options["own-partitions"] == {0, 1, 2, 5}
    options = Options()
    options.parseOptions(["--role=analyzer", "--partitions=4"])
    assert options["own-partitions"] == {0, 1, 2, 3}
    for argv in (["--own-partitions=1"], ["--partitions=4", "--own-partitions=4"],
                 ["--partitions=4", "--own-partitions=a-b"]):
        with pytest.raises(SystemExit) as e:
            Options().parseOptions(argv)
        assert "--own-partitions" in str(e.value.code)
