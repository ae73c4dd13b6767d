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
code, and pip writes no C{-OO} byte code. Before it starts again, it checks
that of the modules the agent loads (listed by the last L{warmUp}, beside
that byte code; L{resmon.operations.bytecode}); when some is missing or out
of date, as after an install or an upgrade of resmon or of what it uses, a
short-lived child imports what the agent will (L{warmUp}), which writes it
(where C{PYTHONPYCACHEPREFIX} says, as the shipped unit sets it). Where
Python may not write byte code, nothing is tried.

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
# Set in the environment of the process started again by the child's
# outcome, for its first log line: "<up to date> <not written>" module
# counts, or why the child failed.
WARMED_ENVIRONMENT = "RESMON_AGENT_WARMED"
WARM_UP_FAILED_ENVIRONMENT = "RESMON_AGENT_WARM_UP_FAILED"
# The pid of the process waiting for the child, in the child's environment:
# the child ends with it (see endWithParent).
WARM_UP_PARENT_ENVIRONMENT = "RESMON_AGENT_WARM_UP_PARENT"
# prctl(2)'s option for the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
# Imported by the agent once it runs (to connect to the broker), beyond
# what building its services imports.
LATER_IMPORTS = ("idna", "encodings.idna")
# Seconds the child may take (it compiles a few hundred modules in 1 to 3
# s), well within the 2 minutes the unit gives a start.
WARM_UP_TIMEOUT = 30


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
    environ.pop(WARM_UP_FAILED_ENVIRONMENT, None)
    if sys.pycache_prefix:
        # Also where -X pycache_prefix gave it, a flag not passed on.
        environ["PYTHONPYCACHEPREFIX"] = sys.pycache_prefix
    if withSSL:
        environ[TLS_ENVIRONMENT] = "1"
    else:
        environ.pop(TLS_ENVIRONMENT, None)
    return environ


def _flavor(options):
    """
    What the agent of C{options} loads beyond the plain one's: one list of
    its modules is kept for each.
    """
    broker = options["broker"]
    parts = (["tls"] if broker is not None and broker.tls else []) + (
        ["metrics"] if options["metrics-port"] is not None else [])
    return "-".join(parts) or "plain"


def _writeByteCode(argv, environ, options):
    """
    If the C{-OO} byte code of a module the agent of C{options} loads (as
    listed by the last L{warmUp} for such options, and those loaded here)
    is missing or out of date where it may be written, have a child
    (L{warmUp}) write it. Whatever goes wrong, the agent starts (and
    compiles what it loads).

    @param environ: the environment of the process started again.
    @return: C{environ}, with the child's outcome if one ran.
    """
    try:
        return _checkAndWriteByteCode(argv, environ, options)
    except Exception as e:
        return dict(environ, **{WARM_UP_FAILED_ENVIRONMENT: f"{type(e).__name__}: {e}"[:200]})


def _checkAndWriteByteCode(argv, environ, options):
    if sys.dont_write_bytecode:
        return environ
    from resmon.operations import bytecode
    manifest = bytecode.manifestPath(__file__, _flavor(options))
    if manifest is None or not bytecode.writableDirectory(manifest):
        return environ  # nothing can be written: the agent compiles what it loads
    leaveOut = () if environ.get(TLS_ENVIRONMENT) else WITHOUT_SSL
    listed = bytecode.readManifest(manifest)
    sources = bytecode.loadedSources(leaveOut=leaveOut) | (listed or set())
    if listed is not None and not bytecode.staleSources(sources):
        return environ
    import signal
    import subprocess
    child = subprocess.Popen(
        [sys.executable] + _interpreterFlags() + ["-OO", "-c", WARM_UP] + list(argv),
        env={**{k: v for k, v in environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))},
             WARM_UP_PARENT_ENVIRONMENT: str(os.getpid())},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stopped(number, frame):
        # Told to stop while the child runs: it goes too (killed, this
        # process cannot end it: endWithParent does).
        child.kill()
        os._exit(128 + number)
    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        out, err = child.communicate(timeout=WARM_UP_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return dict(environ, **{WARM_UP_FAILED_ENVIRONMENT: f"it took over {WARM_UP_TIMEOUT} s"})
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = out.decode("ascii", "replace").strip().splitlines()
    outcome = lines[-1].split() if lines else []
    if child.returncode == 0 and len(outcome) == 2 and all(n.isdigit() for n in outcome):
        return dict(environ, **{WARMED_ENVIRONMENT: " ".join(outcome)})
    lines = err.decode("utf-8", "replace").strip().splitlines()
    why = lines[-1][:200] if lines else f"exit status {child.returncode}"
    return dict(environ, **{WARM_UP_FAILED_ENVIRONMENT: why})


def endWithParent(parent):
    """
    On Linux, have the kernel kill this process when its parent dies
    (C{prctl(PR_SET_PDEATHSIG)}), and exit at once if its parent, whose pid
    C{parent} (a string) is, has already gone: the warm-up child of an
    agent killed (SIGKILL, outside systemd's cgroup) must not run on alone.
    Elsewhere, or without C{parent}, nothing.
    """
    if not parent or not sys.platform.startswith("linux"):
        return
    import signal
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return
    if str(os.getppid()) != parent:
        sys.stderr.write(f"the agent that started it (pid {parent}) is gone\n")
        sys.stderr.flush()
        os._exit(1)


def warmUp():
    """
    In the child of L{_writeByteCode}, under C{python -OO}: import what
    the agent of these options will (building its services, its reactor,
    its logging, L{LATER_IMPORTS}), which writes their byte code; list them
    beside it, and print how many have byte code up to date and how many
    could not be written. It ends with the agent that started it.
    """
    endWithParent(os.environ.get(WARM_UP_PARENT_ENVIRONMENT))
    leaveOut = () if os.environ.get(TLS_ENVIRONMENT) else WITHOUT_SSL
    for name in leaveOut:
        sys.modules.setdefault(name, None)
    options = parseAgentOptions(sys.argv[1:], withoutSSL=bool(leaveOut))
    import importlib

    from resmon.operations import bytecode
    from resmon.tap import makeService
    makeService(options)
    for name in ("twisted.internet.reactor", "twisted.logger",
                 "resmon.operations.exitstatus") + LATER_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    sources = bytecode.loadedSources(leaveOut=leaveOut)
    upToDate, stale, unwritable = bytecode.byteCodeState(sources)
    manifest = bytecode.manifestPath(__file__, _flavor(options))
    try:
        bytecode.writeManifest(manifest, sources)
    except OSError as e:
        sys.exit(f"could not write the list of the agent's modules at {manifest}: {e.strerror}")
    print(len(upToDate), len(stale) + len(unwritable))


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
        _startAgain(argv, _writeByteCode(argv, _agentEnvironment(environ, needsSSL(options)),
                                         options))
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
    return _serve(options, warmed=environ.get(WARMED_ENVIRONMENT),
                  warmUpFailed=environ.get(WARM_UP_FAILED_ENVIRONMENT))


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


def _serve(options, notice=None, warmed=None, warmUpFailed=None):
    """
    Run the agent's services until the process is told to stop, as
    C{twistd} does: started before the reactor runs (a service that fails
    to start ends the process with status 1), stopped before it shuts down.

    @param notice: a line to log first, as a warning, or L{None}.
    @param warmed: what L{warmUp} just did, or L{None}: "<modules whose
        byte code is up to date> <modules whose byte code could not be
        written>".
    @param warmUpFailed: why L{warmUp} failed, or L{None}.
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
    where = sys.pycache_prefix or "their __pycache__ directories"
    if warmed:
        upToDate, notWritten = (int(n) for n in warmed.split())
        if notWritten:
            log.warn("could not write the -OO byte code of {count} of the modules the agent "
                     "loads, in {where}: it compiles them at each start, in more memory",
                     count=notWritten, where=where)
        else:
            log.info("wrote the -OO byte code the agent needs before starting (missing or out "
                     "of date, as after an install or an upgrade): the {count} modules it "
                     "loads are up to date in {where}", count=upToDate, where=where)
    if warmUpFailed:
        log.warn("writing the -OO byte code before starting failed ({why}): what was not "
                 "written, the agent compiles, in more memory", why=warmUpFailed)
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
