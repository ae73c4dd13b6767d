"""
C{resmon-agent}: the agent role alone, without C{twistd}, for the machines
of a fleet where its memory counts.

It takes the options of C{twistd -n resmon --role=agent} (the command
line, C{--config} and C{RESMON_BROKER}), logs the same lines to standard
output, tells systemd the same things and exits with the same statuses, in
the foreground (no daemon, no pid file: systemd or another supervisor runs
it). What it leaves out is what an agent does not use:

  - C{twistd}'s plugin discovery, its debugger and profiler options;
  - docstrings: once the options are read (whatever prints and exits,
    C{--help} included, does so with them), it starts itself again, same
    process, under C{python -OO};
  - the standard library's C{ssl} module, unless the broker is C{amqps://}
    or C{--metrics-port} is given (the Prometheus client imports it).

Compiling a module costs a process more memory than loading its byte
code, and pip writes no C{-OO} byte code: before it starts again, when a
module it loaded has none up to date, it has a short-lived child import
what the agent will (L{warmUp}), which writes it (where
C{PYTHONPYCACHEPREFIX} says, as the shipped unit sets it), so the agent
holds its figure from its first start after an install or upgrade.

This module imports nothing but the standard library at its top, so that
the process started again loads neither for nothing.
"""

import os
import sys

PROGRAM = "resmon-agent"
# Set in the environment of the process started again when it needs ssl.
TLS_ENVIRONMENT = "RESMON_AGENT_TLS"
# Set to run in the first process, docstrings kept (tests, debuggers).
KEEP_DOCSTRINGS_ENVIRONMENT = "RESMON_AGENT_KEEP_DOCSTRINGS"
# How the process starts again: with -c, not -m, so the working directory
# is not put first on sys.path (a psutil.py there would shadow psutil).
BOOTSTRAP = ("import sys\n"
             "if sys.path[:1] == ['']: del sys.path[0]\n"
             "from resmon.agentrunner import run\n"
             "run(restarted=True)\n")
# What the agent makes unimportable unless it needs TLS.
WITHOUT_SSL = ("ssl", "OpenSSL")
# The child that writes the -OO byte code, started the same way.
WARM_UP = ("import sys\n"
           "if sys.path[:1] == ['']: del sys.path[0]\n"
           "from resmon.agentrunner import warmUp\n"
           "warmUp()\n")
# Set in the environment of the process started again: how many modules'
# byte code the child wrote, for its first log line.
WARMED_ENVIRONMENT = "RESMON_AGENT_WARMED"
# Imported by the agent once it runs (to connect to the broker), beyond
# what building its services imports.
LATER_IMPORTS = ("idna", "encodings.idna")
# Seconds the child may take (it compiles a few hundred modules in 1 to 3 s).
WARM_UP_TIMEOUT = 60


class NeedsSSL(Exception):
    """
    The options need the C{ssl} module, which this process was started
    without.
    """


def needsSSL(options):
    """
    Whether the agent the parsed C{options} describe needs the C{ssl}
    module: an C{amqps://} broker, or C{--metrics-port}.
    """
    broker = options["broker"]
    return (broker is not None and broker.tls) or options["metrics-port"] is not None


def _interpreterFlags():
    """
    The flags this interpreter was started with (C{-E}, C{-I}, C{-s},
    C{-X ...}, C{-W ...}, ...), but its C{-O}: the process started again
    keeps them.
    """
    import subprocess
    # The standard library's own way (multiprocessing and the test suite use it).
    return [flag for flag in subprocess._args_from_interpreter_flags() if not flag.startswith("-O")]


def _agentEnvironment(environ, withSSL):
    """
    The environment of the process started again: C{environ}, and whether
    it needs C{ssl}.
    """
    environ = dict(environ)
    environ.pop(WARMED_ENVIRONMENT, None)
    if withSSL:
        environ[TLS_ENVIRONMENT] = "1"
    else:
        environ.pop(TLS_ENVIRONMENT, None)
    return environ


def _upToDate(source, cached):
    """
    Whether C{cached} holds byte code of C{source} as it is now (the
    header the import system checks: magic number, source time and size).
    """
    import importlib.util
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
        status = os.stat(source)
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") != 0:
        return True  # checked by hash, not by time: the import system checks it
    return (int.from_bytes(header[8:12], "little") == int(status.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == status.st_size & 0xFFFFFFFF)


def _sourceModules(modules):
    """
    (name, source, where its C{-OO} byte code goes) of each of C{modules}
    loaded from a source file whose byte code is cached.
    """
    import importlib.util
    for name, module in list(modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is None or not spec.cached or not spec.origin:
            continue
        try:
            cached = importlib.util.cache_from_source(spec.origin, optimization=2)
        except (NotImplementedError, ValueError):
            continue
        yield name, spec.origin, cached


def missingByteCode(modules=None):
    """
    The modules among C{modules} (default: those loaded) loaded from a
    source file whose C{-OO} byte code is missing or out of date where the
    import system would look (C{sys.pycache_prefix} included).

    @return: a list of module names.
    """
    return [name for name, source, cached in _sourceModules(sys.modules if modules is None else modules)
            if not _upToDate(source, cached)]


def _writeByteCode(argv, environ):
    """
    If a module loaded here has no up-to-date C{-OO} byte code, have a
    child (L{warmUp}) write it, that of every module the agent loads.

    @param environ: the environment of the process started again.
    @return: C{environ}, with L{WARMED_ENVIRONMENT} if the child wrote.
    """
    if sys.dont_write_bytecode:
        return environ
    # Loaded here, not by an agent started without them.
    notLoaded = () if environ.get(TLS_ENVIRONMENT) else WITHOUT_SSL
    if not [name for name in missingByteCode() if name.split(".")[0] not in notLoaded]:
        return environ
    import subprocess
    child = {k: v for k, v in environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    try:
        done = subprocess.run(
            [sys.executable] + _interpreterFlags() + ["-OO", "-c", WARM_UP] + list(argv),
            env=child, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, timeout=WARM_UP_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return environ  # the agent compiles what it loads, in more memory
    written = done.stdout.decode("ascii", "replace").strip()
    if done.returncode == 0 and written.isdigit():
        return dict(environ, **{WARMED_ENVIRONMENT: written})
    return environ


def warmUp():
    """
    In the child of L{_writeByteCode}, under C{python -OO}: import what
    the agent of these options will (building its services, its reactor,
    its logging, L{LATER_IMPORTS}), which writes their byte code, and print
    how many modules have byte code up to date.
    """
    if not os.environ.get(TLS_ENVIRONMENT):
        for name in WITHOUT_SSL:
            sys.modules.setdefault(name, None)
    options = parseAgentOptions(sys.argv[1:], withoutSSL=not os.environ.get(TLS_ENVIRONMENT))
    import importlib
    from resmon.tap import makeService
    makeService(options)
    for name in ("twisted.internet.reactor", "twisted.logger",
                 "resmon.operations.exitstatus") + LATER_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    print(sum(_upToDate(source, cached) for _, source, cached in _sourceModules(sys.modules)))


def _startAgain(argv, environ):
    """
    Replace this process (same pid) with the agent under C{python -OO}, in
    C{environ} (see L{_agentEnvironment}).
    """
    os.execve(sys.executable,
              [sys.executable] + _interpreterFlags() + ["-OO", "-c", BOOTSTRAP] + list(argv),
              environ)


def _readOnce(options):
    """
    Whether the C{--config} file could not be read a second time as it was
    the first: a pipe (C{/dev/stdin}, C{<(...)}, a here-document) is empty
    after the first read.
    """
    import stat
    path = options.get("config")
    if not path:
        return False
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def main(argv=None, environ=None, restarted=False):
    """
    @param restarted: whether this is the process started again.
    @return: the exit status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    if not restarted:
        options = parseAgentOptions(argv)
        if environ.get(KEEP_DOCSTRINGS_ENVIRONMENT):
            return _serve(options)
        if _readOnce(options):
            # Started again, it would find the pipe empty and run on defaults.
            return _serve(options, f"--config {options['config']} is not a regular file, so "
                                   "it cannot be read again: running without -OO, in more memory")
        _startAgain(argv, _writeByteCode(argv, _agentEnvironment(environ, needsSSL(options))))
    withoutSSL = not environ.get(TLS_ENVIRONMENT)
    if withoutSSL:
        # As where the standard library was built without it: asyncio, the
        # HTTP modules and Twisted go without.
        for name in WITHOUT_SSL:
            sys.modules.setdefault(name, None)
    try:
        options = parseAgentOptions(argv, withoutSSL)
    except NeedsSSL:
        _startAgain(argv, _agentEnvironment(environ, True))  # started as python -OO directly
    return _serve(options, written=environ.get(WARMED_ENVIRONMENT))


def parseAgentOptions(argv, withoutSSL=False):
    """
    The options of C{twistd resmon --role=agent} given by C{argv} (and the
    C{--config} file and C{RESMON_BROKER} they name).

    @raise SystemExit: with the one line that says what is wrong, or after
        printing what was asked (C{--help}, C{--version}, ...).
    @raise NeedsSSL: if C{withoutSSL} and the options need C{ssl}.
    """
    from resmon.tap import Options

    class AgentOptions(Options):
        program = PROGRAM
        synopsis = f"Usage: {PROGRAM} [options]"
        longdesc = (
            "Run the resmon agent alone, without twistd: sample this machine and publish "
            "its measures to --broker, in the foreground, with the options, log lines and "
            "exit statuses of 'twistd -n resmon --role=agent' (the options of the other "
            "roles are refused). To hold less memory it runs under 'python -OO', and "
            "without the ssl module unless the broker is amqps:// or --metrics-port is "
            "given (docs/operations.md)."
        )

        def postOptions(self):
            if self["role"] != "agent":
                raise SystemExit(
                    f"{PROGRAM}: error: --role: {PROGRAM} runs the agent alone; run the "
                    f"{self['role']} role with twistd resmon --role={self['role']}")
            Options.postOptions(self)

        def _tlsOptions(self):
            # Asked once the broker is parsed, before its TLS files are read.
            if withoutSSL and needsSSL(self):
                raise NeedsSSL()
            return Options._tlsOptions(self)

    options = AgentOptions()
    options.parseOptions(["--role=agent"] + list(argv))
    return options


def _serve(options, notice=None, written=None):
    """
    Run the agent's services until the process is told to stop, as
    C{twistd} does: started before the reactor runs (a service that fails
    to start ends the process with status 1), stopped before it shuts down.

    @param notice: a line to log first, as a warning, or L{None}.
    @param written: how many modules' byte code L{warmUp} just wrote (a
        string), or L{None}.
    @return: the exit status.
    """
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

    from resmon.operations.exitstatus import pendingStatus
    from resmon.tap import makeService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)],
                                     redirectStandardIO=False)
    log = Logger(namespace=PROGRAM)
    if notice:
        log.warn("{notice}", notice=notice)
    if written:
        log.info("wrote the -OO byte code of the {count} modules the agent loads, in {where}, "
                 "before starting (the first start since an install or upgrade)",
                 count=int(written), where=sys.pycache_prefix or "their __pycache__ directories")
    top = makeService(options)
    from twisted.internet import reactor
    try:
        top.privilegedStartService()
        top.startService()
    except Exception:
        log.failure("the agent could not start")
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    status = pendingStatus()
    return 0 if status is None else status


def run(restarted=False):
    sys.exit(main(restarted=restarted))
