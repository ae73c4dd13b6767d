"""
Stopping the process with a non-zero exit status, from inside the reactor.

twistd exits with status 0 whenever its reactor stops, whatever stopped
it. A process that gives up (an exchange it cannot use) must say so to
systemd and to scripts: L{stopWithStatus} stops the reactor, lets twistd
shut down as usual (services stopped, pid file removed, "Server Shut
Down." logged), and then ends the interpreter with the status.
"""

import atexit
import os
import sys

# The status to exit with once twistd is done, or None for twistd's own.
_status = None


def _exit():
    if _status is None:
        return
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(_status)


def stopWithStatus(reactor, status=1):
    """
    Stop C{reactor} and make the process exit with C{status}; nothing
    when C{reactor} does not run.
    """
    global _status
    if not getattr(reactor, "running", False):
        return  # not a running process (a unit test's clock): nothing to stop
    if _status is None:
        atexit.register(_exit)
    _status = status
    reactor.callLater(0, reactor.stop)


def pendingStatus():
    """
    The status L{stopWithStatus} set, or L{None}.
    """
    return _status
