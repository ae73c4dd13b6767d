"""
Analyzer discovery: entry points and single-file drop-ins.

Two sources, both checked the same way:

  - every entry point in the C{resmon.analyzers} group of every installed
    distribution (resmon's own built-ins are registered there too); an entry
    point names a class or a zero-argument factory returning an
    L{IAnalyzer} provider, and its name must equal the analyzer's C{name};
  - every C{*.py} file not starting with C{_} in each plugin directory: each
    public module-level class defined in the file that implements
    L{IAnalyzer} is instantiated with no arguments.

A candidate must pass L{zope.interface.verify.verifyObject} and carry a
valid, unique name (the first one found wins). A broken candidate is refused
with one error log line naming it, its origin and the reason; the others
load. Nothing is written to disk: drop-ins are compiled from source without
reading or writing bytecode caches, so read-only plugin directories and
site-packages are fine.
"""

import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass, field

from twisted.logger import Logger
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from resmon.interfaces import IAnalyzer

ENTRY_POINT_GROUP = "resmon.analyzers"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_REASON = 300

log = Logger()


@dataclass(frozen=True)
class DiscoveredAnalyzer:
    """
    An analyzer that passed every check.

    @ivar name: its C{name}.
    @ivar origin: where it came from: C{"<distribution> <version> (entry
        point <name>)"} or the absolute path of a drop-in file.
    @ivar analyzer: the L{IAnalyzer} provider, not yet configured.
    """

    name: str
    origin: str
    analyzer: object


@dataclass(frozen=True)
class RefusedAnalyzer:
    """
    A candidate that was refused, for listings.

    @ivar what: the entry point name, class name or file name.
    @ivar origin: as for L{DiscoveredAnalyzer.origin}.
    @ivar reason: one line saying why.
    """

    what: str
    origin: str
    reason: str


@dataclass
class Discovery:
    """
    The result of L{discoverAnalyzers}: C{analyzers}, a L{list} of
    L{DiscoveredAnalyzer} in discovery order (entry points first, then
    drop-ins directory by directory, files by name), and C{refused}, a
    L{list} of L{RefusedAnalyzer}.
    """

    analyzers: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    # What is discovered: the interface candidates must provide, and the
    # word naming them in logs and errors ("analyzer", "rule").
    interface: object = IAnalyzer
    kind: str = "analyzer"

    def names(self):
        return [found.name for found in self.analyzers]

    def _refuse(self, what, origin, reason):
        reason = _oneLine(reason)
        self.refused.append(RefusedAnalyzer(what, origin, reason))
        log.error("refused {kind} {what} from {origin}: {reason}",
                  kind=self.kind, what=what, origin=origin, reason=reason)

    def _accept(self, what, origin, analyzer, expectedName=None):
        reason = _checkPlugin(analyzer, self.interface)
        if reason is None and expectedName is not None and analyzer.name != expectedName:
            reason = (f"entry point name {expectedName!r} differs from the {self.kind}'s "
                      f"name {analyzer.name!r}")
        if reason is None:
            taken = next((f for f in self.analyzers if f.name == analyzer.name), None)
            if taken is not None:
                reason = f"duplicate name {analyzer.name!r}, already provided by {taken.origin}"
        if reason is not None:
            self._refuse(what, origin, reason)
            return
        self.analyzers.append(DiscoveredAnalyzer(analyzer.name, origin, analyzer))


def discoverAnalyzers(pluginDirs=()):
    """
    Find every analyzer: entry points of the C{resmon.analyzers} group, then
    drop-in files of C{pluginDirs}, in order.

    @return: a L{Discovery}; refused candidates are logged and listed in its
        C{refused}, never raised.
    """
    return discoverPlugins(pluginDirs)


def discoverPlugins(pluginDirs=(), interface=IAnalyzer, group=ENTRY_POINT_GROUP, kind="analyzer"):
    """
    Find every plugin providing C{interface}: entry points of C{group}, then
    drop-in files of C{pluginDirs}, checked and refused as
    L{discoverAnalyzers} does for analyzers (the rules service finds its
    rules with it).

    @param kind: the word naming such a plugin in logs and reasons.
    @return: a L{Discovery}.
    """
    discovery = Discovery(interface=interface, kind=kind)
    for entryPoint in importlib.metadata.entry_points(group=group):
        _discoverEntryPoint(discovery, entryPoint)
    for directory in pluginDirs:
        _discoverDirectory(discovery, directory)
    return discovery


class AnalyzerConfigurationError(ValueError):
    """
    The operator's analyzer configuration cannot run: an unknown or empty
    selection, options for an unknown analyzer, or options an analyzer
    refused.

    @ivar option: the command-line option at fault, without dashes
        (C{"analyzers"} or C{"analyzer-option"}; for rules, C{"rules"} or
        C{"rule-option"}).
    """

    def __init__(self, option, message):
        ValueError.__init__(self, message)
        self.option = option


def loadAnalyzers(pluginDirs=(), selected=None, options=None):
    """
    Discover analyzers, keep the C{selected} ones and configure them.

    @param selected: analyzer names to run, in that order, or L{None} for
        every discovered analyzer in discovery order.
    @param options: C{{analyzer name: {key: value}}}; an analyzer missing
        from it is configured with C{{}}. Options of a discovered analyzer
        that is not selected are ignored.
    @return: a L{list} of configured L{IAnalyzer} providers.
    @raise AnalyzerConfigurationError: (a L{ValueError}) for an unknown
        selected name, options for an unknown analyzer, an empty selection,
        or an analyzer refusing its options; the message names the analyzer.
    """
    return configureAnalyzers(discoverAnalyzers(pluginDirs), selected, options)


def configureAnalyzers(discovery, selected=None, options=None):
    """
    Keep the C{selected} analyzers of a L{Discovery} and configure them; as
    L{loadAnalyzers}, for a caller that already discovered them (once: each
    discovery imports the drop-ins again).
    """
    byName = {found.name: found for found in discovery.analyzers}
    options = options or {}
    kind = discovery.kind
    for name in options:
        if name not in byName:
            raise AnalyzerConfigurationError(
                f"{kind}-option",
                f"options given for unknown {kind} {name!r}; discovered: {_known(byName)}")
    if selected is None:
        chosen = list(discovery.analyzers)
    else:
        chosen = [_select(byName, name, kind) for name in dict.fromkeys(selected)]
        if not chosen:
            raise AnalyzerConfigurationError(
                f"{kind}s", f"no {kind} selected; discovered: {_known(byName)}")
    analyzers = []
    for found in chosen:
        if _configure(found, options.get(found.name, {}), kind):
            analyzers.append(found.analyzer)
    if not analyzers and kind == "analyzer":
        log.warn("no analyzer to run: analyses will carry no findings "
                 "(is resmon installed, so its built-in analyzers are registered?)")
    return analyzers


def formatAnalyzerList(discovery):
    """
    The text of C{--list-analyzers}: one line per discovered analyzer (name,
    origin, first line of its class docstring), then one per refused
    candidate marked C{REFUSED} with the reason.
    """
    rows = [(found.name, found.origin, _summary(found.analyzer))
            for found in discovery.analyzers]
    rows += [(refused.what, refused.origin, f"REFUSED: {refused.reason}")
             for refused in discovery.refused]
    if not rows:
        return f"no {discovery.kind}s discovered"
    nameWidth = max(len(row[0]) for row in rows)
    originWidth = max(len(row[1]) for row in rows)
    return "\n".join(
        f"{name:<{nameWidth}}  {origin:<{originWidth}}  {text}".rstrip()
        for name, origin, text in rows)


def _discoverEntryPoint(discovery, entryPoint):
    dist = getattr(entryPoint, "dist", None)
    distribution = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    origin = f"{distribution} (entry point {entryPoint.name})"
    try:
        factory = entryPoint.load()
        if not callable(factory):
            raise TypeError(f"{entryPoint.value} is not a class or factory")
        analyzer = factory()
    except Exception as e:
        discovery._refuse(entryPoint.name, origin, _describe(e))
        return
    discovery._accept(entryPoint.name, origin, analyzer, expectedName=entryPoint.name)


def _discoverDirectory(discovery, directory):
    directory = os.path.abspath(directory)
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        discovery._refuse("plugin directory", directory, f"cannot list it: {e.strerror or e}")
        return
    for filename in names:
        path = os.path.join(directory, filename)
        if filename.endswith(".py") and not filename.startswith("_") and os.path.isfile(path):
            _discoverFile(discovery, path)


def _discoverFile(discovery, path):
    filename = os.path.basename(path)
    try:
        module = _importFile(path)
    except Exception as e:
        discovery._refuse(filename, path, _describe(e))
        return
    classes = [
        value for key, value in vars(module).items()
        if isinstance(value, type) and value.__module__ == module.__name__
        and not key.startswith("_") and discovery.interface.implementedBy(value)
    ]
    if not classes:
        interface = discovery.interface.__name__
        discovery._refuse(filename, path, f"defines no class implementing {interface} "
                                          f"(missing @implementer({interface})?)")
    for cls in classes:
        try:
            analyzer = cls()
        except Exception as e:
            discovery._refuse(cls.__name__, path, _describe(e))
            continue
        discovery._accept(cls.__name__, path, analyzer)


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """
    Compiles from source every time: never reads nor writes a bytecode cache.
    """

    def get_code(self, fullname):
        return self.source_to_code(self.get_data(self.path), self.path)


def _importFile(path):
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    moduleName = f"_resmon_dropin_{stem}_{digest}"
    loader = _SourceOnlyLoader(moduleName, path)
    spec = importlib.util.spec_from_file_location(moduleName, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    # Registered first so that dataclasses, pickle and tracebacks can find it.
    sys.modules[moduleName] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[moduleName]
        raise
    return module


def _checkPlugin(analyzer, interface=IAnalyzer):
    try:
        verifyObject(interface, analyzer)
    except Invalid as e:
        return f"does not provide {interface.__name__}: {e}"
    name = analyzer.name
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return (f"invalid name {name!r}: must be 1-64 characters of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit")
    return None


def _select(byName, name, kind="analyzer"):
    if name not in byName:
        raise AnalyzerConfigurationError(
            f"{kind}s", f"unknown {kind} {name!r}; discovered: {_known(byName)}")
    return byName[name]


def _configure(found, options, kind="analyzer"):
    """
    Configure one analyzer. A L{ValueError} is the operator's to fix and
    stops start-up; any other exception is the plugin's bug and refuses it.
    """
    try:
        found.analyzer.configure(dict(options))
    except ValueError as e:
        raise AnalyzerConfigurationError(
            f"{kind}-option", f"{kind} {found.name!r} from {found.origin}: {e}") from e
    except Exception as e:
        log.error("refused {kind} {what} from {origin}: configure failed: {reason}",
                  kind=kind, what=found.name, origin=found.origin, reason=_describe(e))
        return False
    return True


def _known(byName):
    return ", ".join(sorted(byName)) or "(none)"


def _summary(analyzer):
    doc = type(analyzer).__doc__ or ""
    lines = [line.strip() for line in doc.strip().splitlines()]
    return lines[0] if lines and lines[0] else "(no description)"


def _describe(error):
    """
    C{"ExceptionType: message (at file:line)"}, the line being the innermost
    frame of the traceback, so a plugin author can find the fault.
    """
    if isinstance(error, SyntaxError):
        return _oneLine(
            f"{type(error).__name__}: {error.msg} (at {error.filename}:{error.lineno})")
    text = f"{type(error).__name__}: {error}"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith("<frozen ")]
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return _oneLine(text)


def _oneLine(text):
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."
