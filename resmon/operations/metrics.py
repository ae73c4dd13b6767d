"""
Prometheus exposition of resmon's counters with C{prometheus_client}: a
collector that reads the counters the services already keep (the ones
their stats log lines show) when scraped, at C{/metrics} on the web role's
port and on C{--metrics-port}.
"""

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.twisted import MetricsResource
from twisted.application import strports
from twisted.web.resource import Resource
from twisted.web.server import Site


def _counters(name, documentation, label, values):
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name, documentation, value):
    return GaugeMetricFamily(name, documentation, value=value)


class ResmonCollector:
    """
    The counters of one process's services, read at every scrape. Each
    service is L{None} when the role has none.

    @param bus: the L{resmon.interfaces.IBus}.
    @param readiness: the L{resmon.services.readiness.RoleReadiness}.
    @param tracker: the agent's L{resmon.services.agent.TrackerService}.
    @param analyzer: the L{resmon.services.analyzer.AnalyzerService}.
    @param liveness: the L{resmon.services.liveness.HostLiveness}.
    @param web: the L{resmon.services.web.WebService}.
    @param webhooks: the L{resmon.services.webhooks.WebhooksService}.
    """

    def __init__(self, bus, readiness=None, tracker=None, analyzer=None, liveness=None,
                 web=None, webhooks=None):
        self.webhooks = webhooks
        self.bus = bus
        self.readiness = readiness
        self.tracker = tracker
        self.analyzer = analyzer
        self.liveness = liveness
        self.web = web

    def describe(self):
        return []

    def collect(self):
        bus = self.bus
        yield _gauge("resmon_bus_connected", "1 while the bus is connected to the broker.",
                     int(bool(bus.connected)))
        counters = dict(bus.counters)
        yield CounterMetricFamily("resmon_bus_connections", "Successful (re)connections to the "
                                  "broker.", value=counters.pop("connections", 0))
        yield _counters("resmon_bus_messages", "Messages by what happened to them on the bus: "
                        "published, confirmed, nacked, dropped (full outbox), delivered, rejected "
                        "(before any handler), consumer-cancels, refused (by the broker's permissions).",
                        "event", counters)
        yield _gauge("resmon_bus_outbox_messages", "Published messages waiting for the "
                     "broker: unsent, or sent and not yet confirmed.", bus.waiting)
        yield _counters("resmon_bus_rejected", "Deliveries the bus rejected before any handler, "
                        "by reason.", "reason", bus.rejected)
        if self.readiness is not None:
            yield _gauge("resmon_ready", "1 while the role works (what /readyz says).",
                         int(self.readiness.isReady()))
        if self.tracker is not None:
            yield _counters("resmon_agent_measures", "The agent's measures: sampled, confirmed "
                            "by the bus, dropped, failed to sample.", "result",
                            self.tracker.counters)
        if self.analyzer is not None:
            yield from self._analyzer(self.analyzer)
        if self.liveness is not None:
            yield _counters("resmon_liveness_statuses", "Host status events published or "
                            "failed to publish.", "result", self.liveness.counters)
            hosts = GaugeMetricFamily("resmon_liveness_hosts", "Hosts tracked, by status.",
                                      labels=["status"])
            byStatus = {}
            for host in list(self.liveness.hosts.values()):
                status = host.status or "unknown"
                byStatus[status] = byStatus.get(status, 0) + 1
            for status, count in sorted(byStatus.items()):
                hosts.add_metric([status], count)
            yield hosts
        if self.web is not None:
            yield from self._web(self.web)
        if self.webhooks is not None:
            yield _counters("resmon_webhook_deliveries", "Webhook deliveries by what happened: "
                            "stored, delivered, failed-attempts, expired, dropped-backlog, "
                            "dropped-budget (over --webhook-max-stored-mib), "
                            "unmatched (events no hook matches), disabled (hooks), not-visible "
                            "(events the hook's owner may not see), owner-gone (the hook's "
                            "owner is no longer an operator or admin).", "result",
                            self.webhooks.dispatcher.counters)
            resolver = getattr(self.webhooks.dispatcher.poster, "resolver", None)
            if resolver is not None:
                yield _counters("resmon_webhook_lookups", "Lookups of webhook targets' names: "
                                "resolved, failed, timed-out, cached (answered from the answers "
                                "kept).", "result", resolver.counters)

    def _analyzer(self, analyzer):
        counters = analyzer.counters
        yield _counters("resmon_analyzer_measures", "Measures analyzed, and redelivered ones "
                        "not analysed again.", "result",
                        {"analyzed": counters["analyzed"], "redelivered": counters["redelivered"]})
        yield CounterMetricFamily("resmon_analyzer_analyses_published", "Analyses published.",
                                  value=counters["published"])
        yield _counters("resmon_analyzer_rejected", "Measures rejected, by reason.", "reason",
                        analyzer.rejected)
        yield _counters("resmon_analyzer_measure_decodes", "Measure bodies decoded, and "
                        "decodes saved: in the process judging liveness, a body decoded for the "
                        "analyzer or the liveness judge, taken by the other.", "result",
                        analyzer.decoder.counters)
        yield _counters("resmon_analyzer_plugin_seconds", "Seconds spent in each analyzer "
                        "plugin's analyze() (runs that returned).", "analyzer",
                        analyzer.pipeline.seconds)
        yield _counters("resmon_analyzer_plugin_errors", "Analyzer plugin failures, by "
                        "analyzer.", "analyzer", analyzer.pipeline.failures)
        yield CounterMetricFamily("resmon_analyzer_unknown_metrics_dropped",
                                  "Measures whose unknown metrics over the bound were dropped.",
                                  value=analyzer.unknownMetricsDropped)

    def _web(self, web):
        fanout, site = web.fanout, web.site
        yield _counters("resmon_web_events", "Analysis and status events: received, sent to "
                        "clients, duplicates dropped, forgotten hosts, back-online, "
                        "unknown-metrics; batches: messages of several events made for "
                        "the clients that ask for them.", "event", fanout.counters)
        yield _counters("resmon_web_rejected", "Events rejected, by reason.", "reason",
                        fanout.rejected)
        yield _gauge("resmon_web_clients", "WebSocket and event stream clients.",
                     len(fanout.clients))
        yield _gauge("resmon_web_connections", "Connections served now.",
                     web.connections.connections)
        yield _gauge("resmon_web_hosts", "Hosts the web role keeps.", len(fanout.hostIndex))
        yield _gauge("resmon_web_queued_bytes", "Bytes queued to clients that stopped reading.",
                     site.budget.queued)
        yield _counters("resmon_web_slow_clients", "Snapshot pieces that waited for room "
                        "(waited), clients dropped at the send budget (dropped) or for not "
                        "reading (stalled).", "event", site.budget.counters)
        refused = web.connections.refused + site.refused
        yield _counters("resmon_web_refused", "Connections and requests refused, by reason.",
                        "reason", refused)
        yield CounterMetricFamily("resmon_web_websocket_floods", "WebSocket clients closed "
                                  "for flooding.", value=site.websockets.floodsClosed)


def metricsRegistry(collector):
    """
    A registry of C{collector} and this process's own metrics (CPU, memory,
    open files).
    """
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def metricsResource(registry):
    """
    The C{/metrics} resource of C{registry}.
    """
    return MetricsResource(registry)


def metricsService(registry, listen):
    """
    A service serving C{registry} at C{/metrics} on C{listen} (a server
    endpoint description), for roles without a web server.
    """
    root = Resource()
    root.putChild(b"metrics", metricsResource(registry))
    site = Site(root)
    site.noisy = False
    return strports.service(listen, site)


class RulesCollector:
    """
    The counters of the rules service (L{resmon.services.rules.RulesService}),
    read at every scrape.
    """

    def __init__(self, rules):
        self.rules = rules

    def describe(self):
        return []

    def collect(self):
        rules, engine = self.rules, self.rules.engine
        yield _counters("resmon_rules_events", "The rules service's events: received (valid, "
                        "handed to the rules), published (emitted and confirmed).", "result",
                        rules.counters)
        yield _counters("resmon_rules_rejected", "Messages under the rules' patterns rejected as "
                        "invalid, by reason.", "reason", rules.rejected)
        yield _counters("resmon_rules_engine", "The rule engine: events run, actions, events "
                        "emitted, refused at the chain limit, dropped by rate limits, states "
                        "evicted.", "result", engine.counters)
        failures = CounterMetricFamily("resmon_rule_failures", "Rule failures by rule and kind "
                                       "(check-error, action-error, over-budget).",
                                       labels=["rule", "kind"])
        for (rule, kind), count in sorted(engine.failures.items()):
            failures.add_metric([rule, kind], count)
        yield failures
        yield _counters("resmon_rule_emitted", "Events emitted per rule.", "rule", engine.emittedBy)
