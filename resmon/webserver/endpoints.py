"""
Where the web role listens: Twisted server endpoint descriptions
(C{--listen tcp:8080}, C{--listen ssl:8443:privateKey=key.pem:certKey=cert.pem}),
checked when the options are read, and the rule that a web role without
authentication serves this machine only.

Without C{--users} anyone who reaches the dashboard sees the whole fleet, so
a C{tcp:} or C{ssl:} description that names no interface gets
C{interface=127.0.0.1} (C{tcp6:} gets C{::1}), and one that names another
interface is refused, unless C{--insecure-no-auth} says to serve without
authentication anyway.
"""

import ipaddress

from twisted.internet.endpoints import serverFromString

# Endpoint types whose description takes an interface, and the loopback
# address given to one that names none.
LOOPBACK = {"tcp": "127.0.0.1", "ssl": "127.0.0.1", "tcp6": "::1"}
# Endpoint types that never reach another machine.
LOCAL_ONLY = frozenset(["unix"])


class ListenError(ValueError):
    """
    A description that cannot be served, or may not be served without
    authentication: C{option} is the option that gave it.
    """

    def __init__(self, option, message):
        ValueError.__init__(self, message)
        self.option = option


class Listener:
    """
    One endpoint the web role listens on.

    @ivar description: the Twisted server endpoint description, as served.
    @ivar option: the option that gave it (C{--listen} or C{--port}).
    @ivar kind: the endpoint type (C{tcp}, C{ssl}, C{tcp6}, C{unix}, ...).
    @ivar port: the port number (L{None} for types without one).
    @ivar interface: the interface it names (L{None}: all).
    """

    def __init__(self, description, option):
        self.description = description
        self.option = option
        args, kw = splitDescription(description)
        self.kind = args[0].lower() if args else ""
        self.interface = kw.get("interface")
        self.port = None
        if self.kind in LOOPBACK and len(args) > 1:
            try:
                self.port = int(args[1])
            except ValueError:
                pass

    @property
    def scheme(self):
        return "https" if self.kind == "ssl" else "http"

    def confined(self):
        """
        Whether only this machine can reach it.
        """
        if self.kind in LOCAL_ONLY:
            return True
        return self.kind in LOOPBACK and self.interface is not None and isLoopback(self.interface)

    def onLoopback(self):
        """
        This listener on the loopback interface when it names none (the
        same one otherwise).
        """
        if self.kind not in LOOPBACK or self.interface is not None:
            return self
        return Listener(f"{self.description}:interface={escape(LOOPBACK[self.kind])}", self.option)

    def __repr__(self):
        return f"<Listener {self.description!r} from {self.option}>"


def escape(value):
    """
    C{value} as one field of an endpoint description.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def splitDescription(description):
    """
    The positional and keyword fields of an endpoint description, with
    Twisted's backslash escapes undone.
    """
    fields, current, escaped = [], [], False
    keyAt = []
    for c in description:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            fields.append(("".join(current), keyAt[0] if keyAt else None))
            current, keyAt = [], []
        else:
            if c == "=" and not keyAt:
                keyAt.append(len(current))
            current.append(c)
    fields.append(("".join(current), keyAt[0] if keyAt else None))
    args, kw = [], {}
    for text, equals in fields:
        if equals is None:
            args.append(text)
        else:
            kw[text[:equals]] = text[equals + 1:]
    return args, kw


def isLoopback(interface):
    """
    Whether C{interface} (an address or C{localhost}) is this machine only.
    """
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def checkDescription(description, option="--listen"):
    """
    A L{Listener} for C{description} once Twisted can build its endpoint
    (for C{ssl:}, its key and certificate files read), or a L{ListenError}.
    """
    try:
        # No reactor yet: building the endpoint only stores it.
        serverFromString(None, description)
    except Exception as e:
        raise ListenError(option, f"{description!r}: {e}") from None
    return Listener(description, option)


def webListeners(listen=(), port=None, interface="", authenticated=False, insecure=False):
    """
    The endpoints the web role listens on, and the line to say at start.

    @param listen: the C{--listen} descriptions, in order.
    @param port: the C{--port} (with C{--interface}), or L{None} when
        C{--listen} replaces it.
    @param authenticated: whether requests are authenticated (C{--users}).
    @param insecure: C{--insecure-no-auth}: serve other machines without
        authentication.
    @return: a L{list} of L{Listener} and a one-line notice.
    @raise ListenError: for a description Twisted refuses, or one that would
        serve other machines without authentication.
    """
    listeners = [checkDescription(d) for d in listen]
    if port is not None:
        description = f"tcp:{port}"
        if interface:
            description += ":interface=" + escape(interface)
        listeners.append(checkDescription(description, "--port"))
    if authenticated or insecure:
        if not authenticated:
            where = ", ".join(l.description for l in listeners)
            return listeners, (f"--insecure-no-auth: serving the whole fleet without "
                               f"authentication to anyone who reaches {where}")
        return listeners, None
    confined = []
    for listener in listeners:
        listener = listener.onLoopback()
        if not listener.confined():
            what = (f"interface {listener.interface}" if listener.interface is not None
                    else f"a {listener.kind}: endpoint")
            # The --port listener reaches further only through --interface.
            option = "--interface" if listener.option == "--port" else listener.option
            raise ListenError(
                option,
                f"{listener.description!r} reaches other machines ({what}), and without "
                f"--users anyone there would see the whole fleet; give --users FILE, or "
                f"--insecure-no-auth to serve it without authentication")
        confined.append(listener)
    where = ", ".join(sorted({l.interface or l.description for l in confined}))
    return confined, (f"no --users: the dashboard serves this machine only ({where}); "
                      f"give --users FILE to serve others with authentication, or --insecure-no-auth "
                      f"without")
