"""
C{twistd resmon}: options and the service tree of every role.
"""

import math
import os
import socket
import sys

from twisted.python import usage

from resmon import __version__, topics, wire
from resmon.analysis.base import parseThresholds
from resmon.bus.brokerurl import DEFAULT_BROKER, parseBrokerURL
from resmon.defaults import (
    DEFAULT_DEAD_LETTER_QUEUE,
    DEFAULT_HEARTBEAT,
    DEFAULT_OUTBOX_LIMIT,
    DEFAULT_PREFETCH,
    DEFAULT_QUEUE,
    DEFAULT_RULE_EMIT_RATE,
    DEFAULT_HISTORY_POINTS,
    DEFAULT_HISTORY_WINDOW,
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_TIME_BUDGET,
    DEFAULT_GRACE,
    DEFAULT_OFFLINE_AFTER,
    LIVENESS_QUEUE_SUFFIX,
    STALE_INTERVALS,
)
from resmon.auth import options as usersOptions
from resmon.webhooks import options as webhookOptions

ROLES = {
    "agent": ("tracker",),
    "analyzer": ("analyzer",),
    "rules": ("rules",),
    "web": ("web",),
    "webhooks": ("webhooks",),
    "server": ("analyzer", "rules", "web", "webhooks"),
    "standalone": ("tracker", "analyzer", "rules", "web", "webhooks"),
}
MIN_INTERVAL = 0.1
# An agent's outbox holds this many seconds of samples by default.
OUTBOX_SECONDS = 600
# The built-in analyzer that --cpu-thresholds and --memory-thresholds
# configure, and the subjects they set.
USAGE_ANALYZER = "usage"
USAGE_SUBJECTS = ("cpu", "memory")


class Options(usage.Options):
    synopsis = "[options]"
    # How the command is called, in its error lines.
    program = "twistd resmon"
    longdesc = (
        "Run resmon, the reactive resource monitor. With no options, runs the "
        "single-machine mode: agent, analyzer and dashboard in one process on an "
        "in-process bus, the dashboard on http://localhost:8080/. In a fleet, run "
        "'--role=agent' on every machine and '--role=server' once, all with "
        "'--broker' pointing at the same RabbitMQ."
    )

    optFlags = [
        ["list-analyzers", None, "List every discovered analyzer plugin with its origin, then exit."],
        ["list-rules", None, "List every discovered rule plugin with its origin, then exit."],
        ["version", None, "Print resmon's version and exit."],
        ["insecure-no-auth", None,
         "Web role without --users: serve the dashboard and API, without authentication, to "
         "other machines too (otherwise it listens on 127.0.0.1 only)."],
    ] + webhookOptions.FLAGS

    optParameters = [
        ["config", None, None,
         "TOML file of options, each under its long name (port = 8080, broker = \"amqp://...\", "
         "plugin-dir = [\"...\"]); the command line wins over it. The broker URL may also come "
         "from the RESMON_BROKER environment variable (which wins over the file), keeping its "
         "password off the command line."],
        ["role", "r", "standalone",
         "What this process runs: agent (sample this machine and publish measures), "
         "analyzer (analyze measures), rules (run rules on events), web (dashboard and API), "
         "webhooks (deliver events to the registered webhooks), server (analyzer + rules + web + "
         "webhooks), standalone (all five)."],
        ["broker", "b", None,
         "RabbitMQ URL amqp://user:pass@host:port/vhost (vhost '/' is written %2F or left "
         "empty), or amqps://... for TLS (port 5671 by default). Default for every role but "
         "standalone: " + DEFAULT_BROKER + " ; standalone uses an in-process bus unless this "
         "is given."],
        ["tls-ca", None, None,
         "amqps only: PEM file of the certificate authorities the broker's certificate must "
         "chain to (default: the system's trusted authorities). The certificate must also "
         "name the host of the URL."],
        ["tls-cert", None, None,
         "amqps only: PEM file of the certificate this process presents to a broker that "
         "asks for one (with its private key, unless --tls-key is given)."],
        ["tls-key", None, None, "amqps only: PEM file of the private key of --tls-cert."],
        ["exchange", "e", "resmon", "Name of the topic exchange every role publishes to."],
        ["exchange-durable", None, "yes",
         "yes or no: whether a role that finds the exchange missing declares it durable. An "
         "existing exchange is used as it is (no for one shared with the proof of concept's "
         "modules, which declare it non-durable, if resmon may start first)."],
        ["name", "n", None,
         "Host name the agent reports (default: this machine's short host name)."],
        ["interval", "i", "1.0",
         f"Seconds between two samples of the agent (at least {MIN_INTERVAL})."],
        ["port", "p", "8080",
         "TCP port of the dashboard, WebSocket and API (web role); short for --listen "
         "tcp:PORT, and not used when only --listen is given."],
        ["interface", None, "",
         "Address --port (and --metrics-port) listens on (default: all; for the web role "
         "without --users or --insecure-no-auth, 127.0.0.1)."],
        ["queue", None, DEFAULT_QUEUE,
         "Name of the durable queue analyzers share (several analyzers split the load); "
         "at most 200 bytes."],
        ["dead-letter-queue", None, DEFAULT_DEAD_LETTER_QUEUE,
         "Durable queue (at most 10000 messages, oldest dropped) that keeps rejected "
         "measures for inspection; empty to just count and drop them."],
        ["partitions", None, "0",
         "Route each host to one of this many durable partition queues, each consumed by "
         "one analyzer process at a time, so stateful analyzers see all of a host's "
         "measures (0: one queue shared by all analyzers). Must be the same everywhere."],
        ["own-partitions", None, None,
         "Partitions this analyzer consumes, e.g. 0-3,6 (default: all; a partition owned "
         "by several processes fails over between them)."],
        ["prefetch", None, str(DEFAULT_PREFETCH),
         "How many measures one analyzer may hold unacknowledged (1-65535)."],
        ["max-body", None, str(wire.DEFAULT_MAX_BODY),
         "Largest message body accepted, in bytes; larger ones are rejected and counted."],
        ["cpu-thresholds", None, None,
         "CPU percent at which the built-in usage analyzer says MEDIUM and HIGH, e.g. 25,75 "
         "(its default); short for --analyzer-option usage.cpu=..."],
        ["memory-thresholds", None, None,
         "Memory percent at which the built-in usage analyzer says MEDIUM and HIGH, e.g. "
         "60,85 (its default); short for --analyzer-option usage.memory=..."],
        ["time-budget", None, str(DEFAULT_TIME_BUDGET),
         "Seconds one analyzer may take on one measure before its result counts as an error."],
        ["heartbeat", None, str(DEFAULT_HEARTBEAT),
         "AMQP heartbeat in seconds; a broker silent for two heartbeats is reconnected (0 disables)."],
        ["outbox-limit", None, None,
         "Messages kept while the broker is unreachable or has not confirmed them; "
         "the oldest are dropped beyond this (default: ten minutes of samples for the "
         f"agent and standalone roles, {OUTBOX_SECONDS} / --interval, at least 100; "
         f"{DEFAULT_OUTBOX_LIMIT} for the others)."],
        ["stale-after", None, None,
         "Seconds without a measure before the analyzer says a host is stale "
         f"(default: {STALE_INTERVALS} of that host's own intervals)."],
        ["offline-after", None, str(DEFAULT_OFFLINE_AFTER),
         "Seconds without a measure before the analyzer says a host is offline."],
        ["liveness-grace", None, str(DEFAULT_GRACE),
         "Seconds after the analyzer (re)connects to the broker during which it judges no host."],
        ["forget-after", None, str(int(wire.DEFAULT_FORGET_AFTER)),
         "Seconds a host may send nothing before every role forgets it: the analyzer drops "
         "its state and announces it with a 'forgotten' status, the web role drops its latest "
         "analysis, status and history and the dashboard its card. May be shorter than "
         "--offline-after (the host is then forgotten without being said offline)."],
        ["stall-timeout", None, str(DEFAULT_STALL_TIMEOUT),
         "Seconds a WebSocket client may stop reading before it is disconnected."],
        ["history", None, str(int(DEFAULT_HISTORY_WINDOW)),
         "Seconds of history per host the web role keeps for new clients (0: none)."],
        ["history-points", None, str(DEFAULT_HISTORY_POINTS),
         "Most history points kept per host (bounds memory at short intervals)."],
        ["ping-interval", None, "20",
         "Seconds between two WebSocket pings; a client that does not answer within as long "
         "is disconnected."],
        ["idle-timeout", None, "60",
         "Seconds an HTTP connection may stay silent before its request is complete; a "
         "WebSocket handshake that never finishes is dropped after it."],
        ["max-clock-skew", None, str(int(wire.DEFAULT_MAX_CLOCK_SKEW)),
         "Seconds a measure's or analysis's time (ts) may be ahead of this process's clock; "
         "one further ahead is rejected as from the future (reason 'future') and counted."],
        ["stats-interval", None, "60", "Seconds between two log lines with counters."],
        ["max-clients", None, "1000",
         "Web role: connections served at once (HTTP requests, event streams and WebSockets "
         "alike); more are answered 503 with Retry-After and closed."],
        ["max-clients-per-address", None, "50",
         "Web role: connections served at once from one IP address (a proxy in front counts "
         "as one); more are answered 503 with Retry-After and closed."],
        ["max-queued-mib", None, "64",
         "Web role: MiB queued to all WebSocket and event stream clients that stopped "
         "reading; beyond it snapshots wait and a client that stops reading is dropped."],
        ["header-timeout", None, "10",
         "Web role: seconds a client has to send a whole request (line, headers and body) once "
         "connected or after the previous answer; slower ones get a 408 and are closed."],
        ["metrics-port", None, None,
         "TCP port of a Prometheus /metrics endpoint (on --interface) for any role; the "
         "web role also serves /metrics on --port."],
        ["max-hosts", None, "10000",
         "Web role: hosts kept; events of further new hosts are rejected (reason max-hosts) "
         "and counted, known hosts keep updating."],
    ] + webhookOptions.PARAMETERS + usersOptions.PARAMETERS

    optParameters += [
        ["agent-users", None, None,
         "Analyzer: TOML file mapping broker users to the hosts they may publish measures "
         "for (agent-web01 = \"web01\", agent-web = [\"web-*\"]); a measure whose verified "
         "publisher (AMQP user_id) may not speak for its host is rejected as forbidden "
         "(docs/security.md)."],
        ["max-chain", None, str(wire.DEFAULT_MAX_CHAIN),
         "Rules: the deepest chain of rule actions an event may come from; an event one "
         "deeper is refused and counted, so a loop of rules stops."],
        ["rule-rate", None, str(int(DEFAULT_RULE_EMIT_RATE)),
         "Rules: events one rule may emit per second (in bursts of as many, at least 10); "
         "beyond, its events are dropped, counted and logged."],
    ]

    compData = usage.Completions(
        optActions={"role": usage.CompleteList(sorted(ROLES))})

    def __init__(self):
        usage.Options.__init__(self)
        self["plugin-dirs"] = []
        self["rules-dirs"] = []
        self["rule-options"] = {}
        self["analyzer-options"] = {}
        self["allowed-origins"] = []
        self["allowed-hosts"] = []
        self["trusted-proxies"] = []
        self["listen"] = []

    def opt_plugin_dir(self, directory):
        """
        Also load single-file analyzer plugins from this directory (repeatable).
        """
        self["plugin-dirs"].append(directory)

    def opt_rules_dir(self, directory):
        """
        Also load single-file rule plugins from this directory (repeatable).
        """
        self["rules-dirs"].append(directory)

    def opt_rules(self, names):
        """
        Comma-separated rule names to run (default: every discovered one).
        """
        self["rules"] = [n.strip() for n in names.split(",") if n.strip()]

    def opt_rule_option(self, text):
        """
        A rule's option as NAME.KEY=VALUE, e.g. alert.cpu.for=30 (repeatable).
        """
        name, dot, rest = text.partition(".")
        key, equals, value = rest.partition("=")
        if not (name and dot and key and equals):
            raise usage.UsageError(f"--rule-option: expected NAME.KEY=VALUE, not {text!r}")
        self["rule-options"].setdefault(name, {})[key] = value

    def opt_allowed_origin(self, origin):
        """
        Web role: a page origin (e.g. https://dash.example.com) that may also open the WebSocket, besides the dashboard's own origin and programs, which send none (repeatable).
        """
        from resmon.webserver.origins import normalizeOrigin
        try:
            self["allowed-origins"].append(normalizeOrigin(origin))
        except ValueError as e:
            raise usage.UsageError(f"--allowed-origin: {e}")

    def opt_listen(self, description):
        """
        Web role: a Twisted server endpoint description to serve the dashboard on, e.g. tcp:8080:interface=10.0.0.5 or ssl:8443:privateKey=key.pem:certKey=cert.pem (HTTPS and wss://); repeatable, all on one site. Replaces --port unless that is given too. Without --users, tcp: and ssl: ones get interface=127.0.0.1.
        """
        self["listen"].append(description)

    def opt_allowed_host(self, name):
        """
        Web role: a name the dashboard is served under (e.g. dash.example.com), besides addresses, localhost, this machine's host name and FQDN and the hosts of --allowed-origin; requests naming any other host in their Host header get 421, which stops DNS rebinding. '*' accepts any name (repeatable).
        """
        from resmon.webserver.origins import normalizeHostName
        try:
            self["allowed-hosts"].append(normalizeHostName(name))
        except ValueError as e:
            raise usage.UsageError(f"--allowed-host: {e}")

    def opt_trusted_proxy(self, address):
        """
        Web role, with --users: the address or network (e.g. 10.0.0.5, 10.0.0.0/24) of a reverse proxy in front of the dashboard whose X-Forwarded-For is believed, so that the login limits count each client behind it apart (repeatable; see docs/security.md). Requests from anywhere else are their connection's address.
        """
        from resmon.auth.forwarded import parseNetwork
        try:
            self["trusted-proxies"].append(parseNetwork(address))
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}")

    def opt_analyzers(self, names):
        """
        Comma-separated analyzer names to run (default: every discovered one).
        """
        self["analyzers"] = [n.strip() for n in names.split(",") if n.strip()]

    def opt_analyzer_option(self, text):
        """
        An analyzer's option as NAME.KEY=VALUE, e.g. usage.cpu=30,80 (repeatable).
        """
        name, dot, rest = text.partition(".")
        key, equals, value = rest.partition("=")
        if not (name and dot and key and equals):
            raise usage.UsageError(f"--analyzer-option: expected NAME.KEY=VALUE, not {text!r}")
        self["analyzer-options"].setdefault(name, {})[key] = value

    def opt_version(self):
        print(f"resmon {__version__}")
        sys.exit(0)

    def _tlsOptions(self):
        """
        The TLS client options for an amqps:// broker (the files are read
        now, so a bad one stops twistd before it starts), or L{None}.
        """
        given = [name for name in ("tls-ca", "tls-cert", "tls-key") if self[name] is not None]
        broker = self["broker"]
        if broker is None or not broker.tls:
            if given:
                raise usage.UsageError(f"--{given[0]}: only for an amqps:// --broker")
            return None
        from resmon.bus.tls import TLSConfigurationError, brokerTLSOptions
        try:
            return brokerTLSOptions(broker.host, self["tls-ca"], self["tls-cert"], self["tls-key"])
        except TLSConfigurationError as e:
            raise usage.UsageError(f"--{e.option}: {e}")

    def parseOptions(self, options=None):
        # twistd prints its whole usage text before a UsageError; an operator
        # wants the one line that says which option is wrong.
        from resmon.operations.config import ConfigSource, argumentsWithConfig
        self.configSource = ConfigSource()
        try:
            options, self.configSource = argumentsWithConfig(
                self, sys.argv[1:] if options is None else options)
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            raise SystemExit(f"{self.program}: error: {self.configSource.explain(e)} "
                             f"(see '{self.program} --help')")

    def postOptions(self):
        if self["role"] not in ROLES:
            raise usage.UsageError(
                f"--role: unknown role {self['role']!r}; choose one of {', '.join(ROLES)}")
        from resmon.operations.roles import misplacedOption
        source = getattr(self, "configSource", None)
        misplaced = misplacedOption(self["role"], ROLES[self["role"]],
                                    sorted(source.fromCommandLine) if source else (),
                                    listing=self["list-analyzers"],
                                    listingRules=self["list-rules"])
        if misplaced is not None:
            raise usage.UsageError(misplaced)
        broker = self["broker"]
        if broker is None and self["role"] != "standalone":
            broker = DEFAULT_BROKER
        if broker is not None:
            try:
                self["broker"] = parseBrokerURL(broker)
            except ValueError as e:
                raise usage.UsageError(f"--broker: {e}")
        self["tls"] = self._tlsOptions()
        if not self["exchange"] or len(self["exchange"]) > 255:
            raise usage.UsageError("--exchange: must be 1 to 255 characters")
        if not self["queue"] or len(self["queue"].encode("utf-8", "surrogatepass")) > MAX_QUEUE_NAME:
            raise usage.UsageError(
                f"--queue: must be 1 to {MAX_QUEUE_NAME} bytes (the names and routing keys made "
                f"from it, such as <queue>.liveness, must fit in 255)")
        if self["exchange-durable"] not in ("yes", "no"):
            raise usage.UsageError("--exchange-durable: must be yes or no")
        self["interval"] = _number(self, "interval", float, MIN_INTERVAL, 86400)
        self["port"] = _number(self, "port", int, 0, 65535)
        self["prefetch"] = _number(self, "prefetch", int, 1, 65535)
        self["partitions"] = _number(self, "partitions", int, 0, 1024)
        self["own-partitions"] = _partitionSet(self["own-partitions"], self["partitions"])
        self["max-body"] = _number(self, "max-body", int, 64, 128 * 1024 * 1024)
        self["time-budget"] = _number(self, "time-budget", float, 0.001, 60)
        self["heartbeat"] = _number(self, "heartbeat", int, 0, 3600)
        if self["outbox-limit"] is None:
            if "tracker" in ROLES[self["role"]]:
                self["outbox-limit"] = max(100, math.ceil(OUTBOX_SECONDS / self["interval"]))
            else:
                self["outbox-limit"] = DEFAULT_OUTBOX_LIMIT
        else:
            self["outbox-limit"] = _number(self, "outbox-limit", int, 1, 10_000_000)
        if self["stale-after"] is not None:
            self["stale-after"] = _number(self, "stale-after", float, 0.1, 86400)
        self["offline-after"] = _number(self, "offline-after", float, 0.1, 7 * 86400)
        self["liveness-grace"] = _number(self, "liveness-grace", float, 0, 3600)
        self["forget-after"] = _number(self, "forget-after", float, 1, 365 * 86400)
        self["stall-timeout"] = _number(self, "stall-timeout", float, 0.1, 3600)
        self["history"] = _number(self, "history", float, 0, 7 * 86400)
        self["history-points"] = _number(self, "history-points", int, 1, 1_000_000)
        self["stats-interval"] = _number(self, "stats-interval", float, 1, 86400)
        self["ping-interval"] = _number(self, "ping-interval", float, 0.5, 3600)
        self["idle-timeout"] = _number(self, "idle-timeout", float, 0.5, 86400)
        self["max-clock-skew"] = _number(self, "max-clock-skew", float, 1, 365 * 86400)
        self["max-clients"] = _number(self, "max-clients", int, 1, 1_000_000)
        self["max-clients-per-address"] = _number(self, "max-clients-per-address", int, 1, 1_000_000)
        self["max-queued-mib"] = _number(self, "max-queued-mib", float, 1, 1024 * 1024)
        self["header-timeout"] = _number(self, "header-timeout", float, 0.5, 3600)
        self["max-hosts"] = _number(self, "max-hosts", int, 1, 10_000_000)
        webhookOptions.checkOptions(self, _number)
        usersOptions.checkOptions(self, _number)
        if self["metrics-port"] is not None:
            self["metrics-port"] = _number(self, "metrics-port", int, 0, 65535)
        self._checkListeners()
        if self["name"] is not None and not self["name"].strip():
            raise usage.UsageError("--name: must not be empty")
        if self["name"] is not None and len(topics.hostWord(self["name"])) > topics.MAX_HOST_WORD:
            raise usage.UsageError(
                f"--name: at most {topics.MAX_HOST_WORD} characters (the routing key of the "
                f"host's analysis must fit in {topics.MAX_ROUTING_KEY} bytes)")
        for subject in USAGE_SUBJECTS:
            option = f"{subject}-thresholds"
            if self[option] is not None:
                try:
                    parseThresholds(self[option], f"--{option}")
                except ValueError as e:
                    raise usage.UsageError(str(e))
        if "analyzer" in ROLES[self["role"]] or self["list-analyzers"]:
            for directory in self["plugin-dirs"]:
                _checkPluginDirectory(directory)
        if self["list-analyzers"]:
            from resmon.analysis.plugins import discoverAnalyzers, formatAnalyzerList
            print(formatAnalyzerList(discoverAnalyzers(self["plugin-dirs"])))
            sys.exit(0)
        self["analyzer-plugins"] = self["analyzers-left-out"] = None
        if "analyzer" in ROLES[self["role"]]:
            self._loadAnalyzers()
        self["agent-users-map"] = self._agentUsers()
        self._checkRules()

    def _loadAnalyzers(self):
        """
        Discover, select and configure the analyzers now, so that a bad
        selection or option stops twistd with one line before it starts.
        Sets C{analyzer-plugins} (the configured analyzers, in run order)
        and C{analyzers-left-out} (names discovered but not selected).
        """
        from resmon.analysis.plugins import AnalyzerConfigurationError, configureAnalyzers, discoverAnalyzers
        discovery = discoverAnalyzers(self["plugin-dirs"])
        options = {name: dict(values) for name, values in self["analyzer-options"].items()}
        for subject in USAGE_SUBJECTS:
            thresholds = self[f"{subject}-thresholds"]
            if thresholds is None:
                continue
            if USAGE_ANALYZER not in discovery.names():
                raise usage.UsageError(
                    f"--{subject}-thresholds: configures the built-in {USAGE_ANALYZER!r} "
                    f"analyzer, which is not installed; discovered: "
                    f"{', '.join(discovery.names()) or '(none)'}")
            # --analyzer-option usage.cpu=... wins over --cpu-thresholds.
            options.setdefault(USAGE_ANALYZER, {}).setdefault(subject, thresholds)
        try:
            analyzers = configureAnalyzers(discovery, self.get("analyzers"), options)
        except AnalyzerConfigurationError as e:
            raise usage.UsageError(f"--{e.option}: {e}")
        running = {analyzer.name for analyzer in analyzers}
        self["analyzer-plugins"] = analyzers
        self["analyzers-left-out"] = [name for name in discovery.names() if name not in running]

    def _checkListeners(self):
        """
        Sets C{listeners} (the web role's L{resmon.webserver.endpoints.Listener}s)
        and C{listen-notice} (its line at start), from --listen, --port and
        --interface; a description Twisted refuses, or one serving other
        machines without authentication, stops twistd naming its option.
        """
        self["listeners"], self["listen-notice"] = [], None
        if "web" not in ROLES[self["role"]]:
            return
        from resmon.webserver.endpoints import ListenError, webListeners
        authenticated = bool(self.get("users"))
        if self["trusted-proxies"] and not authenticated:
            raise usage.UsageError(
                "--trusted-proxy: needs --users (it decides the address the login limits count)")
        if authenticated and self["insecure-no-auth"]:
            raise usage.UsageError("--insecure-no-auth: not with --users, which authenticates")
        source = getattr(self, "configSource", None)
        portGiven = source is not None and "port" in source.fromCommandLine | source.fromFile
        port = self["port"] if portGiven or not self["listen"] else None
        try:
            self["listeners"], self["listen-notice"] = webListeners(
                self["listen"], port, self["interface"], authenticated, self["insecure-no-auth"])
        except ListenError as e:
            raise usage.UsageError(f"{e.option}: {e}")

    def _agentUsers(self):
        """
        The L{resmon.auth.agents.AgentUsers} of C{--agent-users}, read now
        so that a bad file stops twistd with one line, or L{None}.
        """
        path = self["agent-users"]
        if path is None or "analyzer" not in ROLES[self["role"]]:
            return None
        if self["broker"] is None:
            raise usage.UsageError(
                "--agent-users: needs a --broker (the in-process bus has no broker users)")
        from resmon.auth.agents import AgentUsersError, loadAgentUsers
        try:
            return loadAgentUsers(path)
        except AgentUsersError as e:
            raise usage.UsageError(f"--agent-users: {e}")

    def _checkRules(self):
        """
        The rules' options: C{--list-rules} prints and exits; for the roles
        that run rules, discover, select and configure them now (as
        analyzers are), setting C{rule-plugins} and C{rules-left-out}.
        """
        from resmon.rules.options import checkRuleOptions
        checkRuleOptions(self, "rules" in ROLES[self["role"]])


def _number(options, name, kind, minimum, maximum):
    text = options[name]
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise usage.UsageError(
            f"--{name}: expected {'an integer' if kind is int else 'a number'}, not {text!r}")
    if not (minimum <= value <= maximum) or value != value:
        raise usage.UsageError(f"--{name}: must be between {minimum} and {maximum}, not {text!r}")
    return value


def _checkPluginDirectory(directory):
    if not os.path.exists(directory):
        raise usage.UsageError(f"--plugin-dir: {directory} does not exist")
    if not os.path.isdir(directory):
        raise usage.UsageError(f"--plugin-dir: {directory} is not a directory")
    try:
        os.listdir(directory)
    except OSError as e:
        raise usage.UsageError(f"--plugin-dir: cannot list {directory}: {e.strerror or e}")


def _partitionSet(text, count):
    if text is None:
        return frozenset(range(count))
    if count == 0:
        raise usage.UsageError("--own-partitions: needs --partitions")
    owned = set()
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            owned.update(range(int(first), int(last if dash else first) + 1))
    except ValueError:
        raise usage.UsageError(f"--own-partitions: expected a list such as 0-3,6, not {text!r}")
    if not owned or min(owned) < 0 or max(owned) >= count:
        raise usage.UsageError(
            f"--own-partitions: {text!r} must name partitions between 0 and {count - 1}")
    return frozenset(owned)


def makeService(options):
    """
    Build the service tree of C{options["role"]}.
    """
    if options["role"] == "agent":
        from resmon.operations.lean import leaveTLSUnloaded
        leaveTLSUnloaded()
    from twisted.internet import reactor

    from resmon.services.listening import ListeningService

    parts = ROLES[options["role"]]
    ports = {options["metrics-port"]: "--metrics-port"}
    for listener in options.get("listeners", ()):
        ports.setdefault(listener.port, listener.option)
    top = ListeningService(ports, getattr(options, "program", Options.program))
    bus = _makeBus(options, reactor)
    bus.setServiceParent(top)
    # Consumers start before producers (and stop after them), so the first
    # measure of a standalone process already has a listener.
    web = None
    if "web" in parts:
        web = _makeWeb(options, bus, reactor)
        web.setServiceParent(top)
    if "web" in parts or "webhooks" in parts:
        from resmon.services.webhooks import makeWebhooks
        makeWebhooks(options, bus, web, reactor, "webhooks" in parts).setServiceParent(top)
    if "analyzer" in parts:
        # The process judging liveness receives every measure twice (its
        # share in the analyzers' queue, all of them in the liveness queue):
        # one decoder for both decodes each body once.
        from resmon.analysis.decoding import SharedMeasureDecoder
        decoder = SharedMeasureDecoder(reactor, maxBody=options["max-body"],
                                       maxClockSkew=options["max-clock-skew"])
        _makeAnalyzer(options, bus, reactor, decoder).setServiceParent(top)
        _makeLiveness(options, bus, reactor, decoder).setServiceParent(top)
    if "rules" in parts:
        from resmon.services.rules import makeRulesService
        makeRulesService(options, bus, reactor).setServiceParent(top)
    if "tracker" in parts:
        _makeTracker(options, bus, reactor).setServiceParent(top)
    readiness = _makeReadiness(options, bus, web, reactor)
    readiness.setServiceParent(top)
    if web is not None or options["metrics-port"] is not None:
        # Nothing else serves the counters: an agent without --metrics-port
        # does not load the Prometheus client and twisted.web.
        _makeMetrics(options, top, bus, readiness, web)
    return top


def _makeMetrics(options, top, bus, readiness, web):
    from resmon.operations.metrics import (
        ResmonCollector, metricsRegistry, metricsResource, metricsService)
    services = top.namedServices
    registry = metricsRegistry(ResmonCollector(
        bus, readiness, services.get("tracker"), services.get("analyzer"),
        services.get("liveness"), web, webhooks=services.get("webhooks")))
    if services.get("rules") is not None:
        from resmon.operations.metrics import RulesCollector
        registry.register(RulesCollector(services["rules"]))
    if web is not None:
        web.site.resource.putChild(b"metrics", metricsResource(registry))
    if options["metrics-port"] is not None:
        listen = f"tcp:{options['metrics-port']}"
        if options["interface"]:
            listen += ":interface=" + options["interface"].replace(":", "\\:")
        metricsService(registry, listen).setServiceParent(top)


def _makeReadiness(options, bus, web, reactor):
    from resmon.operations.config import ConfigSource, maskBroker
    from resmon.operations.sdnotify import SystemdNotifier, watchdogInterval
    from resmon.services.readiness import RoleReadiness
    source = getattr(options, "configSource", None) or ConfigSource()
    broker = options["broker"]
    # The dashboard's URL is that of the first listener with a port.
    first = next((l for l in options.get("listeners", ()) if l.port is not None), None)
    notice = [options["listen-notice"]] if options.get("listen-notice") else []
    insecure = options.get("insecure-no-auth")
    readiness = RoleReadiness(
        bus, reactor, options["role"], maskBroker(broker) if broker else None,
        source.describe("broker") if broker else None, options["exchange"], web,
        first.interface or "" if first else "", first.port if first else None,
        source.warnings + (notice if insecure else []), notifier=SystemdNotifier.fromEnvironment(),
        watchdogInterval=watchdogInterval(), notices=[] if insecure else notice,
        scheme=first.scheme if first else "http")
    if web is not None:
        from resmon.webserver.health import addHealthResources
        addHealthResources(web.site.resource, readiness)
    return readiness


# The longest --queue: what resmon makes of it (<queue>.liveness, its
# partitions, resmon.internal.<queue>_liveness.liveness-tick) fits AMQP's 255 bytes.
MAX_QUEUE_NAME = 200


def _makeBus(options, reactor):
    if options["broker"] is None:
        from resmon.bus.local import LocalBus
        return LocalBus(reactor)
    from resmon.bus.amqp import AMQPBus
    from resmon.operations.exitstatus import stopWithStatus
    return AMQPBus(
        options["broker"], options["exchange"], reactor,
        heartbeat=options["heartbeat"], outboxLimit=options["outbox-limit"], tls=options["tls"],
        exchangeDurable=options["exchange-durable"] == "yes", stopProcess=stopWithStatus)


def _makeTracker(options, bus, reactor):
    from resmon.agent.sampler import Sampler, defaultHostName
    from resmon.services.agent import TrackerService
    return TrackerService(
        bus, Sampler(), options["name"] or defaultHostName(), options["interval"], reactor,
        statsInterval=options["stats-interval"])


def _makeAnalyzer(options, bus, reactor, decoder=None):
    from resmon.analysis.pipeline import AnalysisPipeline
    from resmon.services.analyzer import AnalyzerService
    pipeline = AnalysisPipeline(options["analyzer-plugins"], timeBudget=options["time-budget"],
                                wallClock=reactor.seconds, forgetAfter=options["forget-after"])
    partitions = None
    if options["partitions"]:
        partitions = (options["partitions"], options["own-partitions"])
    return AnalyzerService(
        bus, pipeline, reactor, queue=options["queue"], prefetch=options["prefetch"],
        maxBody=options["max-body"], statsInterval=options["stats-interval"],
        partitions=partitions, processId=f"{socket.gethostname()}:{os.getpid()}",
        deadLetter=options["dead-letter-queue"] or None, maxClockSkew=options["max-clock-skew"],
        leftOut=options["analyzers-left-out"], agentUsers=options.get("agent-users-map"),
        decoder=decoder)


def _makeLiveness(options, bus, reactor, decoder=None):
    from resmon.services.liveness import HostLiveness
    return HostLiveness(
        bus, reactor, staleAfter=options["stale-after"], offlineAfter=options["offline-after"],
        grace=options["liveness-grace"], maxBody=options["max-body"],
        queue=options["queue"] + LIVENESS_QUEUE_SUFFIX, maxClockSkew=options["max-clock-skew"],
        forgetAfter=options["forget-after"], agentUsers=options.get("agent-users-map"),
        decoder=decoder)


def _makeWeb(options, bus, reactor):
    import txaio

    from resmon.webserver.origins import OriginPolicy, machineHostNames
    from resmon.services.web import WebService

    # Autobahn logs every connection's life at debug level, which twistd
    # would print: keep its info and above.
    txaio.use_twisted()
    txaio.set_global_log_level("info")
    listen = [listener.description for listener in options["listeners"]]
    web = WebService(bus, listen, reactor, stallTimeout=options["stall-timeout"],
                      historyWindow=options["history"], historyPoints=options["history-points"],
                      pingInterval=options["ping-interval"], idleTimeout=options["idle-timeout"],
                      statsInterval=options["stats-interval"],
                      origins=OriginPolicy(options["allowed-origins"],
                                           options["allowed-hosts"] + machineHostNames()),
                      maxClockSkew=options["max-clock-skew"],
                      maxClients=options["max-clients"],
                      maxClientsPerAddress=options["max-clients-per-address"],
                      maxQueued=int(options["max-queued-mib"] * 1024 * 1024),
                      headerTimeout=options["header-timeout"], maxHosts=options["max-hosts"],
                      forgetAfter=options["forget-after"], maxBody=options["max-body"])
    if options["users"] is not None:
        from resmon.auth.service import attachUsers
        from resmon.auth.forwarded import TrustedProxies
        users = attachUsers(web, options["users"], reactor, options["session-lifetime"],
                            statsInterval=options["stats-interval"],
                            proxies=TrustedProxies(options["trusted-proxies"]))
        from resmon.webserver.notifications import UsersDirectory
        web.notifications.directory = UsersDirectory(users.watcher)
    return web
