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


def _startAgain(argv, environ, withSSL):
    """
    Replace this process (same pid) with the agent under C{python -OO}.
    """
    environ = dict(environ)
    if withSSL:
        environ[TLS_ENVIRONMENT] = "1"
    else:
        environ.pop(TLS_ENVIRONMENT, None)
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
        _startAgain(argv, environ, needsSSL(options))
    withoutSSL = not environ.get(TLS_ENVIRONMENT)
    if withoutSSL:
        # As where the standard library was built without it: asyncio, the
        # HTTP modules and Twisted go without.
        sys.modules.setdefault("ssl", None)
        sys.modules.setdefault("OpenSSL", None)
    try:
        options = parseAgentOptions(argv, withoutSSL)
    except NeedsSSL:
        _startAgain(argv, environ, True)  # started as python -OO directly
    return _serve(options)


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


def _serve(options, notice=None):
    """
    Run the agent's services until the process is told to stop, as
    C{twistd} does: started before the reactor runs (a service that fails
    to start ends the process with status 1), stopped before it shuts down.

    @param notice: a line to log first, or L{None}.
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
