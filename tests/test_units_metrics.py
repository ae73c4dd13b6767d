"""
Tests for L{resmon.operations.metrics}: the collector reads the services' counters at
every scrape.
"""

from prometheus_client import generate_latest

from fakebus import FakeBus
from resmon.operations.metrics import ResmonCollector, metricsRegistry
from resmon.tap import Options


class Tracker:
    counters = {"sampled": 5, "confirmed": 4, "dropped": 1, "failed": 0}


def test_the_counters_of_the_services_of_the_role():
    bus = FakeBus()
    bus.rejected["properties"] = 2
    registry = metricsRegistry(ResmonCollector(bus, tracker=Tracker()))
    text = generate_latest(registry).decode()
    assert 'resmon_agent_measures_total{result="sampled"} 5.0' in text
    assert 'resmon_bus_rejected_total{reason="properties"} 2.0' in text
    assert "resmon_bus_connected 1.0" in text
    assert "resmon_bus_connections_total 1.0" in text
    assert "resmon_bus_outbox_messages 0.0" in text
    assert "resmon_analyzer" not in text and "resmon_web" not in text
    # Read at each scrape.
    bus.counters["published"] = 7
    bus.connected = False
    bus.waiting = 3
    text = generate_latest(registry).decode()
    assert "resmon_bus_outbox_messages 3.0" in text
    assert 'resmon_bus_messages_total{event="published"} 7.0' in text
    assert "resmon_bus_connected 0.0" in text


def test_metrics_port_option():
    options = Options()
    options.parseOptions(["--role=agent", "--metrics-port=9101"])
    assert options["metrics-port"] == 9101
    assert Options().parseOptions(["--role=agent"]) is None


def test_a_bad_metrics_port_is_one_line():
    import pytest
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--role=agent", "--metrics-port=70000"])
    assert "--metrics-port: must be between 0 and 65535, not '70000'" in str(e.value.code)


def test_the_webhooks_roles_lookups_of_target_names():
    from collections import Counter
    from types import SimpleNamespace
    resolver = SimpleNamespace(counters=Counter({"resolved": 3, "failed": 1, "timed-out": 2}))
    dispatcher = SimpleNamespace(counters=Counter({"stored": 5}),
                                 poster=SimpleNamespace(resolver=resolver))
    registry = metricsRegistry(ResmonCollector(
        FakeBus(), webhooks=SimpleNamespace(dispatcher=dispatcher)))
    text = generate_latest(registry).decode()
    assert 'resmon_webhook_deliveries_total{result="stored"} 5.0' in text
    assert 'resmon_webhook_lookups_total{result="timed-out"} 2.0' in text
    assert 'resmon_webhook_lookups_total{result="resolved"} 3.0' in text
