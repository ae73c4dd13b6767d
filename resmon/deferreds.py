"""
Small things done with L{Deferred}s in more than one place.
"""

from twisted.internet import defer


def observe(d):
    """
    A new L{Deferred} with C{d}'s result, leaving C{d}'s result to its own
    callbacks: a timeout on (or a cancellation of) the observer stops the
    waiting, not C{d}.
    """
    observer = defer.Deferred()

    def fire(result):
        observer.callback(result)
        return result
    d.addBoth(fire)
    return observer
