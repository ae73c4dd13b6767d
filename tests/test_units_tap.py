"""
Tests for L{resmon.tap}'s loading of analyzers, and for the analysis
pipeline deriving an analysis' summary from whichever analyzers run.
"""

import io
import json
import subprocess
import sys

import pytest

from resmon import wire
from resmon.analysis import plugins
from resmon.analysis.base import Analyzer
from resmon.analysis.builtin.disk import DiskAnalyzer
from resmon.analysis.builtin.sustained import SustainedLoadAnalyzer
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.tap import Options


def test_importing_tap_loads_no_bus_web_or_services():
    """
    C{twistd --help} imports C{resmon.tap}: it must not pull in txAMQP,
    Autobahn, the services or the reactor.
    """
    code = "import json, sys, resmon.tap; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    modules = json.loads(result.stdout)
    assert "resmon.tap" in modules
    heavy = [name for name in modules
             if name.split(".")[0] in ("txamqp", "autobahn", "txaio", "psutil")
             or name.startswith(("resmon.services", "resmon.bus.amqp"))
             or name == "twisted.internet.reactor"]
    assert heavy == []


def test_the_agent_loads_none_of_the_other_roles_modules():
    """
    The agent runs on every machine of the fleet: its service tree loads
    neither the web role (its options' defaults live in L{resmon.defaults}),
    nor the analysis pipeline, the rules, the webhooks' services, Autobahn,
    C{twisted.web} or the C{decimal} module (AMQP decimals are rare in
    headers and loaded when met).
    """
    code = ("import json, sys\n"
            "from resmon.tap import Options, makeService\n"
            "options = Options()\n"
            "options.parseOptions(['--role=agent', '--broker=amqp://guest:guest@127.0.0.1:1/'])\n"
            "makeService(options)\n"
            "print(json.dumps(sorted(name for name, module in sys.modules.items() if module)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    modules = json.loads(result.stdout)
    assert "resmon.services.agent" in modules and "resmon.bus.amqp" in modules
    others = [name for name in modules
              if name.startswith(("resmon.webserver", "resmon.analysis.pipeline", "resmon.services.web",
                                  "resmon.services.rules", "resmon.services.webhooks",
                                  "resmon.rules.", "resmon.webhooks.", "resmon.auth.",
                                  "autobahn", "twisted.web", "OpenSSL", "decimal"))
              and not name.endswith(".options")]  # every role's options are read
    assert others == []


def _discovered(*analyzers):
    discovery = plugins.Discovery()
    for analyzer in analyzers:
        discovery.analyzers.append(plugins.DiscoveredAnalyzer(analyzer.name, "test", analyzer))
    return discovery


@pytest.fixture
def withoutUsage(monkeypatch):
    """
    Discovery finds only the sustained and disk analyzers, as when the
    built-in usage analyzer is not installed.
    """
    monkeypatch.setattr(plugins, "discoverAnalyzers",
                        lambda dirs=(): _discovered(SustainedLoadAnalyzer(), DiskAnalyzer()))


def test_analyzer_role_starts_without_the_usage_analyzer(withoutUsage):
    options = Options()
    options.parseOptions(["--role=analyzer"])
    assert [a.name for a in options["analyzer-plugins"]] == ["sustained", "disk"]
    assert options["analyzers-left-out"] == []


def test_thresholds_of_a_missing_usage_analyzer_stop_with_one_line(withoutUsage):
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--role=analyzer", "--memory-thresholds=50,70"])
    text = str(e.value.code)
    assert "--memory-thresholds: configures the built-in 'usage' analyzer, which is not installed" in text
    assert "\n" not in text


def test_analyzers_not_selected_are_left_out(monkeypatch):
    monkeypatch.setattr(plugins, "discoverAnalyzers",
                        lambda dirs=(): _discovered(UsageAnalyzer(), SustainedLoadAnalyzer(),
                                                    DiskAnalyzer()))
    options = Options()
    # Thresholds for an installed analyzer left out are ignored, like its options.
    options.parseOptions(["--role=server", "--analyzers=disk,sustained", "--cpu-thresholds=10,20"])
    assert [a.name for a in options["analyzer-plugins"]] == ["disk", "sustained"]
    assert options["analyzers-left-out"] == ["usage"]


def test_thresholds_configure_the_usage_analyzer_unless_given_as_analyzer_options(monkeypatch):
    usage = UsageAnalyzer()
    monkeypatch.setattr(plugins, "discoverAnalyzers", lambda dirs=(): _discovered(usage))
    Options().parseOptions(["--role=analyzer", "--cpu-thresholds=10,20",
                            "--memory-thresholds=30,40", "--analyzer-option=usage.memory=50,60"])
    assert usage.thresholds == {"cpu": (10.0, 20.0), "memory": (50.0, 60.0)}


def test_roles_without_analyzer_load_no_analyzer(monkeypatch, tmp_path):
    def discover(dirs=()):
        raise AssertionError("discovered analyzers for a role that runs none")
    monkeypatch.setattr(plugins, "discoverAnalyzers", discover)
    # A config file shared with a server may select analyzers.
    config = tmp_path / "shared.toml"
    config.write_text('analyzers = "nope"\n')
    for role in ("agent", "web"):
        options = Options()
        options.parseOptions([f"--role={role}", f"--config={config}"])
        assert options["analyzer-plugins"] is None


@pytest.mark.parametrize("argv, message", [
    (["--analyzers=,"], "--analyzers: no analyzer selected; discovered: disk, sustained"),
    (["--analyzers=usage"], "--analyzers: unknown analyzer 'usage'; discovered: disk, sustained"),
    (["--analyzer-option=usage.cpu=1,2"],
     "--analyzer-option: options given for unknown analyzer 'usage'"),
    (["--analyzer-option=sustained.samples=x"],
     "--analyzer-option: analyzer 'sustained' from test: samples must be an integer"),
    (["--plugin-dir=/nonexistent/plugins"],
     "--plugin-dir: /nonexistent/plugins does not exist"),
    (["--plugin-dir=/etc/hostname"], "--plugin-dir: /etc/hostname is not a directory"),
])
def test_bad_analyzer_configuration_stops_with_one_line(withoutUsage, argv, message):
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--role=analyzer"] + argv)
    text = str(e.value.code)
    assert message in text and "\n" not in text


class _ChecksOnly(Analyzer):
    """
    Gives a check, no overall level.
    """
    name = "checksonly"

    def analyze(self, measure, state):
        return {"checks": {"cpu": {"level": "HIGH"}, "temperature": {"level": "HIGH"}}}


def _measure(cpu):
    body = wire.encodeMeasure("h", 1, 1000.0, 1.0, {
        "cpu": {"percent": cpu, "per_core": [cpu]},
        "memory": {"total": 100, "used": 90, "available": 10, "percent": 90.0}})
    return wire.decodeMeasure("h.measure", body)


def test_summary_comes_from_whichever_analyzer_supplies_the_check():
    """
    Without the usage analyzer, C{levels.cpu} and C{cpu_result} come from
    the running analyzer with a C{cpu} check, and there is no memory level;
    with several, the worst of their checks, whatever their order; an
    analyzer with checks but no overall level still counts in the
    analysis' level.
    """
    sustained = SustainedLoadAnalyzer()
    sustained.configure({"samples": "1"})
    analysis = AnalysisPipeline([sustained]).analyze(_measure(60.0))
    assert (analysis["level"], analysis["levels"], analysis["cpu_result"]) == (
        "MEDIUM", {"cpu": "MEDIUM"}, "MEDIUM")
    analysis = AnalysisPipeline([DiskAnalyzer()]).analyze(_measure(60.0))
    assert (analysis["level"], analysis["levels"], analysis["cpu_result"]) == (None, {}, None)
    analysis = AnalysisPipeline([_ChecksOnly(), UsageAnalyzer()]).analyze(_measure(10.0))
    assert analysis["levels"] == {"cpu": "HIGH", "memory": "HIGH"}
    assert analysis["level"] == "HIGH"
    analysis = AnalysisPipeline([UsageAnalyzer(), _ChecksOnly()]).analyze(_measure(10.0))
    assert analysis["levels"] == {"cpu": "HIGH", "memory": "HIGH"}
    analysis = AnalysisPipeline([sustained, UsageAnalyzer()]).analyze(_measure(30.0))
    assert analysis["analyses"]["sustained"]["checks"]["cpu"]["level"] == "LOW"
    assert analysis["cpu_result"] == "MEDIUM" and analysis["levels"]["memory"] == "HIGH"


@pytest.mark.parametrize("argv, message", [
    (["--role=agent", "--plugin-dir=/tmp"],
     "--plugin-dir: means nothing for --role=agent; it is for roles with an analyzer "
     "(analyzer, server, standalone)"),
    (["--role=agent", "--analyzers=usage"],
     "--analyzers: means nothing for --role=agent; it is for roles with an analyzer "
     "(analyzer, server, standalone)"),
    (["--role=analyzer", "-p", "9000"],
     "--port: means nothing for --role=analyzer; it is for roles with a web server "
     "(web, server, standalone)"),
    (["--role=web", "--interval=5"],
     "--interval: means nothing for --role=web; it is for roles with an agent "
     "(agent, standalone)"),
    (["--role=agent", "--forget-after=60"],
     "--forget-after: means nothing for --role=agent; it is for roles with an analyzer "
     "(analyzer, server, standalone) or a web server (web, server, standalone)"),
])
def test_options_a_role_does_not_read_are_refused_on_the_command_line(argv, message):
    with pytest.raises(SystemExit) as raised:
        Options().parseOptions(argv)
    assert str(raised.value) == f"twistd resmon: error: {message} (see 'twistd resmon --help')"


def test_options_of_other_roles_from_a_shared_config_file_are_left_alone(tmp_path):
    config = tmp_path / "shared.toml"
    config.write_text('port = 9000\nplugin-dir = ["/nonexistent"]\n'
                      'broker = "amqp://u:p@broker/"\n')
    options = Options()
    options.parseOptions(["--role=agent", f"--config={config}", "--name=a"])
    assert options["role"] == "agent" and options["name"] == "a"


@pytest.mark.parametrize("argv", [
    ["--role=standalone", "--plugin-dir={empty}", "--port=9000", "--interval=2"],
    ["--role=server", "--plugin-dir={empty}", "--port=9000", "--forget-after=60"],
    ["--role=agent", "--stats-interval=5", "--metrics-port=9100", "--interface=127.0.0.1"],
    ["--role=agent", "--plugin-dir={empty}", "--list-analyzers"],
])
def test_options_a_role_reads_are_accepted(argv, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "exit", lambda status: None)  # --list-analyzers
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    Options().parseOptions([a.format(empty=tmp_path) for a in argv])


def _servesMetrics(top):
    return any(getattr(getattr(service, "factory", None), "resource", None) is not None
               and b"metrics" in service.factory.resource.children for service in top)


def test_an_agent_serves_counters_only_on_its_metrics_port():
    from resmon.tap import makeService
    options = Options()
    options.parseOptions(["--role=agent", "--broker=amqp://u:p@h/"])
    assert not _servesMetrics(makeService(options))
    options = Options()
    options.parseOptions(["--role=agent", "--broker=amqp://u:p@h/", "--metrics-port=0"])
    assert _servesMetrics(makeService(options))


def test_tls_is_left_unloaded_only_before_the_reactor_and_pyopenssl():
    from resmon.operations.lean import leaveTLSUnloaded
    modules = {}
    assert leaveTLSUnloaded(modules) and modules == {"OpenSSL": None}
    loaded = {"OpenSSL": object()}
    assert not leaveTLSUnloaded(loaded) and loaded["OpenSSL"] is not None
    running = {"twisted.internet.reactor": object()}
    assert not leaveTLSUnloaded(running) and "OpenSSL" not in running
    # In this process the reactor runs already: nothing is changed.
    assert not leaveTLSUnloaded() and sys.modules.get("OpenSSL") is not None
