"""
C{resmon-agent}: the agent role alone, without C{twistd}, for the machines
of a fleet where its memory counts.

It takes the options of C{twistd -n resmon --role=agent} (the command
line, C{--config} and C{RESMON_BROKER}), logs the same lines to standard
output, tells systemd the same things and exits with the same statuses, in
the foreground (no daemon, no pid file: systemd or another supervisor runs
it). What it leaves out is what an agent does not use:

  - C{twistd}'s plugin discovery, its debugger and profiler options;
  - docstrings: it runs under C{python -OO} (it starts itself again so,
    unless asked for C{--help} or C{--version});
  - the standard library's C{ssl} module, for a plain C{amqp://} broker.
    An C{amqps://} broker (or a C{--tls-*} option) makes it start itself
    again with TLS.

This module imports nothing but the standard library before it has
decided both, so that neither is loaded for nothing.
"""

import os
import sys

PROGRAM = "resmon-agent"
# Set in the environment of the process started again to use TLS.
TLS_ENVIRONMENT = "RESMON_AGENT_TLS"
# Set to run without starting again under -OO (tests, debuggers).
KEEP_DOCSTRINGS_ENVIRONMENT = "RESMON_AGENT_KEEP_DOCSTRINGS"
# Arguments that print and exit: shown in full, docstrings included.
PRINTING = ("--help", "-h", "--version")


def _startAgain(argv, environ):
    """
    Replace this process with C{python -OO -m resmon.agent.run ARGV}.
    """
    os.execve(sys.executable, [sys.executable, "-OO", "-m", "resmon.agent.run"] + list(argv),
              environ)


def wantsDocstringsDropped(argv, environ, optimize=None):
    """
    Whether to start again under C{python -OO}: not when already so, when
    asked not to, or for C{--help} and C{--version}.
    """
    optimize = sys.flags.optimize if optimize is None else optimize
    if optimize >= 2 or environ.get(KEEP_DOCSTRINGS_ENVIRONMENT):
        return False
    return not any(argument in PRINTING for argument in argv)


class NeedsTLS(Exception):
    """
    The options name an C{amqps://} broker, and this process was started
    without TLS.
    """


def main(argv=None, environ=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    if wantsDocstringsDropped(argv, environ):
        _startAgain(argv, environ)
    withoutTLS = not environ.get(TLS_ENVIRONMENT)
    if withoutTLS:
        # As where the standard library was built without it: asyncio, the
        # HTTP modules and Twisted go without; nothing of the agent needs it.
        sys.modules.setdefault("ssl", None)
        sys.modules.setdefault("OpenSSL", None)
    try:
        options = parseAgentOptions(argv, withoutTLS)
    except NeedsTLS:
        _startAgain(argv, dict(environ, **{TLS_ENVIRONMENT: "1"}))
    return _serve(options)


def parseAgentOptions(argv, withoutTLS=False):
    """
    The options of C{twistd resmon --role=agent} given by C{argv} (and the
    C{--config} file and C{RESMON_BROKER} they name).

    @raise SystemExit: with the one line that says what is wrong.
    @raise NeedsTLS: if C{withoutTLS} and the broker is C{amqps://}.
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
            "without the ssl module unless the broker is amqps:// (docs/operations.md)."
        )

        def postOptions(self):
            if self["role"] != "agent":
                raise SystemExit(
                    f"{PROGRAM}: error: --role: {PROGRAM} runs the agent alone; run the "
                    f"{self['role']} role with twistd resmon --role={self['role']}")
            Options.postOptions(self)

        def _tlsOptions(self):
            broker = self["broker"]
            if withoutTLS and broker is not None and broker.tls:
                raise NeedsTLS()
            return Options._tlsOptions(self)

    options = AgentOptions()
    options.parseOptions(["--role=agent"] + list(argv))
    return options


def _serve(options):
    """
    Run the agent's services until the process is told to stop.

    @return: the exit status.
    """
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from resmon.operations.exitstatus import pendingStatus
    from resmon.tap import makeService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)],
                                     redirectStandardIO=False)
    top = makeService(options)
    from twisted.internet import reactor
    top.privilegedStartService()
    reactor.callWhenRunning(top.startService)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    status = pendingStatus()
    return 0 if status is None else status


def run():
    sys.exit(main())


if __name__ == "__main__":
    run()
