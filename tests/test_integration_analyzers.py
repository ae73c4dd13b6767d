"""
The analyzer role without the built-in C{usage} analyzer, end to end on the
real RabbitMQ: the core derives an analysis' level, C{levels} and
C{cpu_result} from whichever analyzers run.
"""

import json
import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor

from resmon import wire
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from support import subscriptionsReady, waitUntil

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

# Loaded by the interpreter at start-up from PYTHONPATH: hides the entry
# point of the built-in usage analyzer, as if it were not installed.
HIDE_USAGE = """
import importlib.metadata as metadata

_entryPoints = metadata.entry_points


def entry_points(**params):
    found = _entryPoints(**params)
    if params.get("group") == "resmon.analyzers":
        found = metadata.EntryPoints(e for e in found if e.name != "usage")
    return found


metadata.entry_points = entry_points
"""


@pytest.fixture
def withoutUsage(tmp_path):
    """
    The environment of a twistd to which the usage analyzer is not installed.
    """
    (tmp_path / "sitecustomize.py").write_text(HIDE_USAGE)
    return {"PYTHONPATH": str(tmp_path)}


def _measure(host, seq, cpu, diskPercent):
    metrics = {
        "cpu": {"percent": cpu, "per_core": [cpu]},
        "memory": {"total": 100, "used": 50, "available": 50, "percent": 50.0},
        "disks": [{"mount": "/data", "device": "/dev/x", "fstype": "ext4", "total": 1000,
                   "used": int(diskPercent * 10), "free": 1000 - int(diskPercent * 10),
                   "percent": diskPercent}],
    }
    return wire.encodeMeasure(host, seq, 1_000_000.0 + seq, 1.0, metrics)


@pytest.mark.parametrize("installed", [True, False], ids=["not-selected", "not-installed"])
@pytest_twisted.inlineCallbacks
def test_analyzer_runs_without_the_usage_analyzer(broker, amqp, twistd, withoutUsage, installed):
    """
    Without the usage analyzer, not selected (C{--analyzers=sustained,disk})
    or not installed: the analyzer starts, says which analyzers run and
    which were left out, and publishes analyses whose level is the worst of
    sustained's and disk's, whose C{levels} and C{cpu_result} come from
    sustained's C{cpu} check, and which have no memory level (no running
    analyzer judges memory).
    """
    if installed:
        env, selection, started = {}, ["--analyzers=sustained,disk"], (
            b"with sustained, disk (not selected: usage)")
    else:
        env, selection, started = withoutUsage, [], b"with disk, sustained\n"
    exchange = amqp.names["exchange"]
    analyses = []
    listener = AMQPBus(parseBrokerURL(broker), exchange, reactor)
    listener.subscribe(["nousage.analysis"], lambda key, body: analyses.append(json.loads(body)))
    listener.startService()
    try:
        yield subscriptionsReady(listener)
        analyzer = twistd(
            "analyzer-nousage", "--role=analyzer", f"--broker={broker}", f"--exchange={exchange}",
            f"--queue={amqp.names['queue']}", f"--dead-letter-queue={amqp.names['deadletter']}",
            "--analyzer-option=sustained.samples=2", *selection, env=env)
        yield analyzer.waitForOutput(b"consuming #.measure")
        assert started in analyzer.output
        # CPU at 90 % twice: sustained rises to HIGH on the second; the disk
        # is 85 % full: MEDIUM.
        for seq, cpu in enumerate([90.0, 90.0, 90.0]):
            yield amqp.publish(exchange, "nousage.measure", _measure("nousage", seq, cpu, 85.0))
        yield waitUntil(lambda: len(analyses) >= 3, 10, "three analyses on nousage.analysis")
    finally:
        yield listener.stopService()
    assert [a["seq"] for a in analyses] == [0, 1, 2]
    for analysis in analyses:
        assert set(analysis["analyses"]) == {"sustained", "disk"}
        sustained = analysis["analyses"]["sustained"]
        assert sustained["status"] == "ok" and analysis["analyses"]["disk"]["status"] == "ok"
        assert analysis["cpu_result"] == sustained["checks"]["cpu"]["level"]
        assert analysis["levels"] == {"cpu": analysis["cpu_result"]}
        assert analysis["analyses"]["disk"]["level"] == "MEDIUM"
    assert [a["cpu_result"] for a in analyses] == ["LOW", "HIGH", "HIGH"]
    assert [a["level"] for a in analyses] == ["MEDIUM", "HIGH", "HIGH"]
    assert b"Traceback" not in analyzer.output


def test_bad_analyzer_configuration_stops_twistd_with_one_line(tmp_path, withoutUsage):
    """
    An unknown analyzer name, options for an unknown analyzer, an option an
    analyzer refuses, and a plugin directory that cannot be read each stop
    C{twistd} before it starts, with one line naming the option.
    """
    missing = str(tmp_path / "missing")
    for argv, expected in [
        (["--analyzers=sustained,nope"], "--analyzers: unknown analyzer 'nope'; discovered: "),
        (["--cpu-thresholds=30,80"], "--cpu-thresholds: configures the built-in 'usage' analyzer, "
                                     "which is not installed; discovered: disk, sustained"),
        (["--analyzer-option=nope.x=1"], "--analyzer-option: options given for unknown analyzer 'nope'"),
        (["--analyzer-option=disk.medium=x"], "--analyzer-option: analyzer 'disk' from resmon "),
        ([f"--plugin-dir={missing}"], f"--plugin-dir: {missing} does not exist"),
        ([f"--plugin-dir={__file__}"], f"--plugin-dir: {__file__} is not a directory"),
    ]:
        # The usage analyzer is hidden only for --cpu-thresholds.
        env = dict(os.environ, **(withoutUsage if "thresholds" in argv[0] else {}))
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "resmon", "--role=analyzer"] + argv,
                                capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 1, (argv, result)
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (argv, lines)
