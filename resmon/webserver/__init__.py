"""
The web role's server side: fan-out of analyses and statuses to every open
dashboard (L{resmon.webserver.fanout}), per-client flow control and the
global send budget, per-host history, subscriptions, the WebSocket protocol,
Server-Sent Events, the HTTP API, origin and host checks, connection limits
and the static files.

Not to be confused with the top-level C{web/} folder of the repository: that
one holds the browser's files (installed as C{resmon/webroot}). The service
that wires this package to the bus is L{resmon.services.web}.
"""
