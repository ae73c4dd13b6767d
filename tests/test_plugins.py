"""
Tests for L{resmon.analysis.plugins}: discovery from entry points and drop-in
directories, the checks that refuse broken plugins, selection,
configuration and the listing.
"""

import importlib.metadata
import os
import sys
import textwrap

import pytest
from twisted.logger import Logger

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli there
    import tomli as tomllib

from resmon.analysis import plugins
from resmon.interfaces import IAnalyzer
from resmon.analysis.pipeline import validateFindings
from resmon.wire import Measure

GOOD = """
    from zope.interface import implementer
    from resmon.interfaces import IAnalyzer

    @implementer(IAnalyzer)
    class {cls}:
        '''{doc}

        More text that the listing does not show.
        '''

        name = {name!r}

        def configure(self, options):
            if options.get("fail") == "value":
                raise ValueError("fail must not be 'value'")
            if options.get("fail") == "crash":
                raise KeyError("oops")
            self.options = options

        def analyze(self, measure, state):
            return None
"""


@pytest.fixture(autouse=True)
def forgetPluginModules():
    """
    Unload the modules a test's plugins imported, so that the next test
    imports its own files afresh.
    """
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("resmon_fake_", "_resmon_dropin_")):
            del sys.modules[name]


@pytest.fixture
def logged(monkeypatch):
    """
    The events logged by L{resmon.analysis.plugins}.
    """
    events = []
    monkeypatch.setattr(plugins, "log", Logger(observer=events.append))
    return events


@pytest.fixture
def pluginDir(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    return directory


def writePlugin(directory, filename, source):
    path = directory / filename
    path.write_text(textwrap.dedent(source))
    return str(path)


def goodPlugin(name, cls="GoodAnalyzer", doc="A good analyzer."):
    return textwrap.dedent(GOOD).format(name=name, cls=cls, doc=doc)


def makeDistribution(monkeypatch, root, distName, version, entryPoints, modules=None):
    """
    Make an installed distribution C{distName} in a new C{sys.path} entry
    C{root}, declaring C{entryPoints} (C{"name = module:attr"} lines) in
    resmon's group, with C{modules} ({module name: source}) next to it.
    """
    root.mkdir()
    info = root / f"{distName.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distName}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        f"[{plugins.ENTRY_POINT_GROUP}]\n" + "\n".join(entryPoints) + "\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(root))


def fromOrigin(discovery, prefix):
    return {found.name: found for found in discovery.analyzers if found.origin.startswith(prefix)}


def refusedFrom(discovery, prefix):
    return [refused for refused in discovery.refused if refused.origin.startswith(prefix)]


def errorsAbout(logged, what):
    return [event for event in logged
            if event["log_level"].name == "error" and event.get("what") == what]


def test_dropInLoads(pluginDir, logged):
    """
    Every IAnalyzer class of a drop-in file is instantiated and discovered,
    with the file as its origin; private files and classes are skipped.
    """
    path = writePlugin(pluginDir, "good.py", goodPlugin("good-one") + goodPlugin(
        "good-two", cls="SecondAnalyzer") + goodPlugin("private", cls="_Base"))
    writePlugin(pluginDir, "_helper.py", "raise RuntimeError('never imported')\n")
    writePlugin(pluginDir, "notes.txt", "not python\n")
    discovery = plugins.discoverAnalyzers([str(pluginDir)])
    found = fromOrigin(discovery, str(pluginDir))
    assert sorted(found) == ["good-one", "good-two"]
    assert found["good-one"].origin == path
    assert IAnalyzer.providedBy(found["good-one"].analyzer)
    assert refusedFrom(discovery, str(pluginDir)) == []
    assert [e for e in logged if e["log_level"].name == "error"] == []


def test_dropInWritesNoBytecode(pluginDir, logged):
    """
    Loading a drop-in writes nothing next to it, so a read-only plugin
    directory works.
    """
    writePlugin(pluginDir, "good.py", goodPlugin("good"))
    plugins.discoverAnalyzers([str(pluginDir)])
    assert sorted(os.listdir(pluginDir)) == ["good.py"]


def test_brokenDropInsAreRefused(pluginDir, logged):
    """
    An import error, a class failing verifyObject, a constructor raising, a
    bad name and a file without analyzers are each refused with one error
    line naming it and its file; the good plugin still loads.
    """
    writePlugin(pluginDir, "a_good.py", goodPlugin("good"))
    importError = writePlugin(pluginDir, "importerror.py", "import resmon_no_such_module\n")
    notProvided = writePlugin(pluginDir, "incomplete.py", """
        from zope.interface import implementer
        from resmon.interfaces import IAnalyzer

        @implementer(IAnalyzer)
        class Incomplete:
            name = "incomplete"

            def analyze(self, measure, state):
                return None
    """)
    raising = writePlugin(pluginDir, "raising.py", """
        from resmon.analysis.base import Analyzer

        class Raising(Analyzer):
            name = "raising"

            def __init__(self):
                raise RuntimeError("no config file")
    """)
    badName = writePlugin(pluginDir, "badname.py", goodPlugin("Bad Name!"))
    empty = writePlugin(pluginDir, "empty.py", "class NotAnAnalyzer:\n    name = 'nope'\n")
    discovery = plugins.discoverAnalyzers([str(pluginDir)])

    assert sorted(fromOrigin(discovery, str(pluginDir))) == ["good"]
    refused = {r.origin: r for r in refusedFrom(discovery, str(pluginDir))}
    assert sorted(refused) == sorted([importError, notProvided, raising, badName, empty])
    assert "ModuleNotFoundError" in refused[importError].reason
    assert f"{importError}:1" in refused[importError].reason
    assert "configure" in refused[notProvided].reason
    assert "no config file" in refused[raising].reason
    assert refused[raising].what == "Raising"
    assert "invalid name 'Bad Name!'" in refused[badName].reason
    assert "no class implementing IAnalyzer" in refused[empty].reason
    errors = [e for e in logged if e["log_level"].name == "error"]
    assert len(errors) == 5
    for event in errors:
        assert event["origin"] in refused
        assert "\n" not in event["reason"]


def test_syntaxErrorIsRefused(pluginDir, logged):
    path = writePlugin(pluginDir, "syntax.py", "def broken(:\n")
    discovery = plugins.discoverAnalyzers([str(pluginDir)])
    [refused] = refusedFrom(discovery, str(pluginDir))
    assert refused.origin == path
    assert refused.reason.startswith("SyntaxError")
    assert refused.reason.endswith(f"(at {path}:1)")


def test_duplicateDropInIsRefused(tmp_path, logged):
    """
    The first analyzer of a name wins; a later one is refused, naming where
    the first came from.
    """
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    kept = writePlugin(first, "dup.py", goodPlugin("dup", doc="The first."))
    duplicate = writePlugin(second, "dup.py", goodPlugin("dup", doc="The second."))
    discovery = plugins.discoverAnalyzers([str(first), str(second)])
    assert fromOrigin(discovery, str(tmp_path))["dup"].origin == kept
    [refused] = refusedFrom(discovery, str(tmp_path))
    assert refused.origin == duplicate
    assert refused.reason == f"duplicate name 'dup', already provided by {kept}"
    assert len(errorsAbout(logged, "GoodAnalyzer")) == 1


def test_missingPluginDirectoryIsReported(tmp_path, logged):
    missing = str(tmp_path / "missing")
    discovery = plugins.discoverAnalyzers([missing])
    [refused] = refusedFrom(discovery, missing)
    assert refused.what == "plugin directory"
    assert len(errorsAbout(logged, "plugin directory")) == 1


def test_entryPoints(tmp_path, monkeypatch, logged):
    """
    Entry points of installed distributions are discovered with their
    distribution's name and version as origin; a class and a factory both
    work; broken ones are refused with one line each.
    """
    makeDistribution(
        monkeypatch, tmp_path / "site", "resmon-fake-plugins", "1.2.3",
        ["fakeclass = resmon_fake_plugins:FakeAnalyzer",
         "fakefactory = resmon_fake_plugins:makeFactoryAnalyzer",
         "fakemissing = resmon_fake_plugins:NoSuchAttribute",
         "fakeimport = resmon_fake_missing_module:Anything",
         "fakeplain = resmon_fake_plugins:Plain",
         "fakewrongname = resmon_fake_plugins:FakeAnalyzer"],
        {"resmon_fake_plugins": goodPlugin("fakeclass", cls="FakeAnalyzer") + textwrap.dedent("""
            def makeFactoryAnalyzer():
                analyzer = FakeAnalyzer()
                analyzer.name = "fakefactory"
                return analyzer

            class Plain:
                name = "fakeplain"

                def configure(self, options):
                    pass

                def analyze(self, measure, state):
                    return None
        """)})
    discovery = plugins.discoverAnalyzers()
    found = fromOrigin(discovery, "resmon-fake-plugins")
    assert sorted(found) == ["fakeclass", "fakefactory"]
    assert found["fakeclass"].origin == "resmon-fake-plugins 1.2.3 (entry point fakeclass)"
    refused = {r.what: r for r in refusedFrom(discovery, "resmon-fake-plugins")}
    assert sorted(refused) == ["fakeimport", "fakemissing", "fakeplain", "fakewrongname"]
    assert refused["fakeimport"].origin == "resmon-fake-plugins 1.2.3 (entry point fakeimport)"
    assert "ModuleNotFoundError" in refused["fakeimport"].reason
    assert "AttributeError" in refused["fakemissing"].reason
    assert "does not provide IAnalyzer" in refused["fakeplain"].reason
    assert "differs from the analyzer's name 'fakeclass'" in refused["fakewrongname"].reason
    for what in refused:
        assert len(errorsAbout(logged, what)) == 1


def test_entryPointDuplicateAcrossDistributions(tmp_path, monkeypatch, logged):
    """
    Two distributions registering one name: the one found first on
    C{sys.path} wins; the other is refused naming both distributions.
    """
    module = {"resmon_fake_dup": goodPlugin("fakedup")}
    makeDistribution(monkeypatch, tmp_path / "later", "resmon-fake-later", "2.0",
                     ["fakedup = resmon_fake_dup:GoodAnalyzer"], module)
    makeDistribution(monkeypatch, tmp_path / "earlier", "resmon-fake-earlier", "1.0",
                     ["fakedup = resmon_fake_dup:GoodAnalyzer"], module)
    discovery = plugins.discoverAnalyzers()
    assert fromOrigin(discovery, "resmon-fake-")["fakedup"].origin.startswith(
        "resmon-fake-earlier 1.0")
    [refused] = refusedFrom(discovery, "resmon-fake-later")
    assert "already provided by resmon-fake-earlier 1.0" in refused.reason


def test_entryPointWinsOverDropIn(tmp_path, pluginDir, monkeypatch, logged):
    makeDistribution(monkeypatch, tmp_path / "site", "resmon-fake-ep", "1.0",
                     ["fakeshared = resmon_fake_ep:GoodAnalyzer"],
                     {"resmon_fake_ep": goodPlugin("fakeshared")})
    path = writePlugin(pluginDir, "shared.py", goodPlugin("fakeshared"))
    discovery = plugins.discoverAnalyzers([str(pluginDir)])
    assert fromOrigin(discovery, "resmon-fake-ep")["fakeshared"]
    assert [r.origin for r in refusedFrom(discovery, str(pluginDir))] == [path]


def _requireInstalledResmon():
    try:
        importlib.metadata.distribution("resmon")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("resmon is not installed, so its entry points are not registered: "
                    "install it first (pip install .), as the README says", pytrace=False)


def test_builtinsAreEntryPoints():
    """
    resmon's own analyzers come from resmon's distribution's entry points,
    like any third party's.
    """
    _requireInstalledResmon()
    found = fromOrigin(plugins.discoverAnalyzers(), "resmon ")
    assert {"usage", "sustained", "disk"} <= set(found)
    assert found["usage"].origin.endswith("(entry point usage)")


def test_loadSelectsAndConfigures(pluginDir, logged):
    """
    L{loadAnalyzers} keeps the selected analyzers in the selected order and
    configures each with its own options, or C{{}}.
    """
    writePlugin(pluginDir, "one.py", goodPlugin("one"))
    writePlugin(pluginDir, "two.py", goodPlugin("two"))
    writePlugin(pluginDir, "three.py", goodPlugin("three"))
    analyzers = plugins.loadAnalyzers(
        [str(pluginDir)], selected=["two", "one", "two"],
        options={"one": {"key": "value"}, "three": {"ignored": "yes"}})
    assert [a.name for a in analyzers] == ["two", "one"]
    assert analyzers[0].options == {}
    assert analyzers[1].options == {"key": "value"}


def test_loadAllByDefault(pluginDir, logged):
    writePlugin(pluginDir, "one.py", goodPlugin("one"))
    names = [a.name for a in plugins.loadAnalyzers([str(pluginDir)])]
    assert "one" in names


def test_loadUnknownSelection(pluginDir, logged):
    writePlugin(pluginDir, "one.py", goodPlugin("one"))
    with pytest.raises(ValueError, match=r"unknown analyzer 'nope'; discovered: .*\bone\b"):
        plugins.loadAnalyzers([str(pluginDir)], selected=["one", "nope"])


def test_loadEmptySelection(pluginDir, logged):
    with pytest.raises(ValueError, match="no analyzer selected"):
        plugins.loadAnalyzers([str(pluginDir)], selected=[])


def test_loadOptionsForUnknownAnalyzer(pluginDir, logged):
    writePlugin(pluginDir, "one.py", goodPlugin("one"))
    with pytest.raises(ValueError, match="options given for unknown analyzer 'onee'"):
        plugins.loadAnalyzers([str(pluginDir)], options={"onee": {"a": "b"}})


def test_loadConfigureValueError(pluginDir, logged):
    """
    A L{ValueError} from C{configure} is the operator's: it stops loading,
    naming the analyzer and its origin.
    """
    path = writePlugin(pluginDir, "one.py", goodPlugin("one"))
    with pytest.raises(ValueError) as caught:
        plugins.loadAnalyzers([str(pluginDir)], selected=["one"], options={"one": {"fail": "value"}})
    assert str(caught.value) == f"analyzer 'one' from {path}: fail must not be 'value'"


def test_loadConfigureCrashRefuses(pluginDir, logged):
    """
    Any other exception from C{configure} is the plugin's bug: that analyzer
    is refused and logged, the others run.
    """
    writePlugin(pluginDir, "one.py", goodPlugin("one"))
    writePlugin(pluginDir, "two.py", goodPlugin("two"))
    analyzers = plugins.loadAnalyzers(
        [str(pluginDir)], selected=["one", "two"], options={"one": {"fail": "crash"}})
    assert [a.name for a in analyzers] == ["two"]
    [event] = errorsAbout(logged, "one")
    assert "KeyError" in event["reason"]


def test_loadBuiltinOptions(logged):
    """
    The built-ins turn bad options into L{ValueError}s naming the analyzer.
    """
    _requireInstalledResmon()
    with pytest.raises(ValueError, match="analyzer 'sustained' .*samples must be an integer"):
        plugins.loadAnalyzers(selected=["sustained"], options={"sustained": {"samples": "x"}})


def test_formatAnalyzerList(tmp_path, pluginDir, logged):
    """
    One line per analyzer with name, origin and docstring summary; refused
    ones marked REFUSED with their reason.
    """
    good = writePlugin(pluginDir, "good.py", goodPlugin("good", doc="Judges goodness."))
    broken = writePlugin(pluginDir, "broken.py", "import resmon_no_such_module\n")
    undocumented = writePlugin(pluginDir, "undocumented.py", """
        from resmon.analysis.base import Analyzer

        class Undocumented(Analyzer):
            name = "undocumented"
    """)
    lines = plugins.formatAnalyzerList(plugins.discoverAnalyzers([str(pluginDir)])).splitlines()
    [goodLine] = [line for line in lines if good in line]
    assert goodLine.split() == ["good", good, "Judges", "goodness."]
    [brokenLine] = [line for line in lines if broken in line]
    assert brokenLine.split()[:3] == ["broken.py", broken, "REFUSED:"]
    assert "ModuleNotFoundError" in brokenLine
    [undocumentedLine] = [line for line in lines if undocumented in line]
    assert undocumentedLine.endswith("(no description)")
    assert lines.index(goodLine) < lines.index(brokenLine)


def test_formatEmptyList():
    assert plugins.formatAnalyzerList(plugins.Discovery()) == "no analyzers discovered"


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def exampleMeasure():
    return Measure("web-01", 1, 1000.0, 1.0, {
        "cpu": {"percent": 30.0, "per_core": [20.0, 40.0]},
        "load": [1.5, 1.0, 1.0],
        "swap": {"total": 100, "used": 30, "free": 70, "percent": 30.0},
    })


def test_exampleDropIn(logged):
    """
    The single-file example loads from its directory and judges load per core.
    """
    directory = os.path.join(EXAMPLES, "dropin")
    [analyzer] = plugins.loadAnalyzers(
        [directory], selected=["loadpercore"], options={"loadpercore": {"medium": "0.5", "high": "0.7"}})
    findings = analyzer.analyze(exampleMeasure(), {})
    assert validateFindings(findings)["checks"]["load_per_core"] == {
        "level": "HIGH", "value": 0.75, "message": "load 1.50 on 2 cores"}
    assert "__pycache__" not in os.listdir(directory)


def test_exampleDistribution(tmp_path, monkeypatch, logged):
    """
    The example distribution's declared entry point finds its analyzer.
    """
    project = os.path.join(EXAMPLES, "resmon-example-analyzer")
    with open(os.path.join(project, "pyproject.toml"), "rb") as f:
        metadata = tomllib.load(f)["project"]
    entryPoints = metadata["entry-points"][plugins.ENTRY_POINT_GROUP]
    makeDistribution(monkeypatch, tmp_path / "site", metadata["name"], metadata["version"],
                     [f"{name} = {value}" for name, value in entryPoints.items()])
    monkeypatch.syspath_prepend(project)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    try:
        [analyzer] = plugins.loadAnalyzers(
            selected=["swap"], options={"swap": {"thresholds": "10,40"}})
        found = fromOrigin(plugins.discoverAnalyzers(), "resmon-example-analyzer 0.1.0")
        assert list(found) == ["swap"]
        state = {}
        analyzer.analyze(exampleMeasure(), state)
        findings = analyzer.analyze(exampleMeasure(), state)
        assert validateFindings(findings) == {
            "level": "MEDIUM",
            "checks": {"swap": {"level": "MEDIUM", "value": 30.0, "message": "swap 30.0 % used"}},
        }
    finally:
        for name in [n for n in sys.modules if n.startswith("resmon_example_analyzer")]:
            del sys.modules[name]
