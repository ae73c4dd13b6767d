"""
The webhook registry and its delivery: other systems register a callback
URL for a routing-key pattern and receive every matching event, signed and
retried (see C{docs/webhooks.md}).

options.py (the options and their checks, light enough for C{twistd
--help}), validation.py (what a registration may be), addresses.py (which
targets are public, and an endpoint factory that connects to those only),
store.py (the registry and the pending deliveries in SQLite or PostgreSQL
through L{twisted.enterprise.adbapi}), registry.py (the API's operations),
signing.py (signatures and backoff), poster.py (one POST: Agent, pool,
timeout, bounded answer), delivery.py (events into stored deliveries, and
delivering them, retrying, in order per hook).
"""
