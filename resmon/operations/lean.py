"""
Keeping the agent small: Twisted's reactor loads TLS support (pyOpenSSL and
cryptography, about 12 MiB of resident memory) when it is first imported,
whether or not anything uses it. An agent talking plain C{amqp://} never
does, and runs on every machine of the fleet; L{leaveTLSUnloaded} makes the
reactor start without it, as Twisted does where pyOpenSSL is not installed.
"""

import sys

# What the reactor would load for TLS (Twisted's optional "tls" extra).
TLS_MODULE = "OpenSSL"


def leaveTLSUnloaded(modules=sys.modules):
    """
    Before the reactor is first imported, make pyOpenSSL unimportable in
    this process, so the reactor starts without TLS support. Nothing is
    done once the reactor or pyOpenSSL is loaded (an C{amqps://} broker has
    loaded it already, to read its certificates).

    @param modules: the module table (C{sys.modules}).
    @return: whether TLS was left unloaded.
    """
    if TLS_MODULE in modules or "twisted.internet.reactor" in modules:
        return False
    # A None entry is how the import system spells "cannot be imported".
    modules[TLS_MODULE] = None
    return True
