"""
Tests for L{resmon.services.readiness}: the start line, and (with fakes)
when a role says it is ready.
"""

from resmon.services.readiness import dashboardURL, startLine


def test_dashboard_url():
    assert dashboardURL("127.0.0.1", 8080) == "http://127.0.0.1:8080/"
    assert dashboardURL("::1", 80) == "http://[::1]:80/"
    assert dashboardURL("", 8080).startswith("http://") and dashboardURL("", 8080).endswith(":8080/")


def test_start_line():
    assert startLine("agent", broker="amqp://u:***@h:5672/%2F", brokerSource="RESMON_BROKER",
                     exchange="resmon") == (
        "resmon agent started: broker amqp://u:***@h:5672/%2F (from RESMON_BROKER), exchange resmon")
    assert startLine("standalone", "http://vm:8080/", "") == (
        "resmon standalone started: dashboard at http://vm:8080/ (all interfaces), "
        "in-process bus (no broker)")
