"""
systemd's notification protocol (C{sd_notify(3)}) with the standard library:
C{READY=1}, C{STATUS=...}, C{STOPPING=1} and C{WATCHDOG=1} as datagrams to
the C{AF_UNIX} socket named by C{NOTIFY_SOCKET}.
"""

import os
import socket

from twisted.logger import Logger


class SystemdNotifier:
    """
    Sends notifications to the service manager listening on C{address}.

    @param address: the socket's path; one starting with C{@} is in the
        abstract namespace (as systemd writes it).
    """

    log = Logger()

    def __init__(self, address):
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self._failed = False

    @classmethod
    def fromEnvironment(cls, environ=None):
        """
        The notifier of C{NOTIFY_SOCKET}, or a L{NullNotifier} when it is
        not set (not started by systemd with C{Type=notify}).
        """
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET")
        if not address or address[0] not in "/@":
            return NullNotifier()
        return cls(address)

    def notify(self, **assignments):
        """
        Send C{NAME=value} lines in one datagram, e.g.
        C{notify(READY=1, STATUS="consuming")}; a value's newlines become
        spaces.

        @return: whether it was sent. A failure is logged once, never
            raised: the service works without its manager hearing of it.
        """
        lines = "".join(f"{name}={str(value).replace(chr(10), ' ')}\n"
                        for name, value in assignments.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(lines.encode("utf-8"), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                self.log.warn("cannot notify systemd at {address}: {error}",
                              address=self.address.replace("\0", "@"), error=e)
            return False
        self._failed = False
        return True


class NullNotifier:
    """
    A notifier for a process no service manager listens to.
    """

    address = None

    def notify(self, **assignments):
        return False


def watchdogInterval(environ=None, pid=None):
    """
    Seconds between two C{WATCHDOG=1} (half of C{WATCHDOG_USEC}, as
    C{sd_watchdog_enabled(3)} advises), or L{None} when systemd expects none
    from this process.
    """
    environ = os.environ if environ is None else environ
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(pid if pid is not None else os.getpid())):
        return None
    return usec / 2 / 1_000_000
