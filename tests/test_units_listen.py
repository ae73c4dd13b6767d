"""
Where the web role listens (L{resmon.webserver.endpoints}): endpoint
descriptions from C{--listen} and C{--port}, checked when the options are
read, and the loopback default without authentication.
"""

import pytest
from twisted.internet import endpoints
from twisted.python.systemd import ListenFDs

from certificates import authority, issue
from resmon.services.listening import ListeningService
from resmon.services.readiness import dashboardURL
from resmon.tap import Options, makeService
from resmon.webserver.endpoints import ListenError, isLoopback, splitDescription, webListeners


def _parsed(*args, users=None):
    options = Options()
    if users is not None:
        args += (f"--users={users}",)
    options.parseOptions(list(args))
    return options


def _refused(*args, users=None):
    with pytest.raises(SystemExit) as raised:
        _parsed(*args, users=users)
    return str(raised.value)


def _descriptions(options):
    return [listener.description for listener in options["listeners"]]


def test_descriptions_split_as_twisted_reads_them():
    assert splitDescription("ssl:8443:privateKey=a\\:b.pem:certKey=c") == (
        ["ssl", "8443"], {"privateKey": "a:b.pem", "certKey": "c"})
    assert splitDescription("tcp6:80:interface=\\:\\:1") == (["tcp6", "80"], {"interface": "::1"})
    assert splitDescription("unix:/run/a=b") == (["unix"], {"/run/a": "b"})


def test_loopback_addresses():
    assert isLoopback("127.0.0.1") and isLoopback("127.1.2.3") and isLoopback("::1")
    assert isLoopback("localhost")
    assert not isLoopback("0.0.0.0") and not isLoopback("::") and not isLoopback("10.0.0.1")
    assert not isLoopback("example.com")


def test_without_users_the_web_roles_listen_on_loopback_and_say_so():
    for role in ("web", "server", "standalone"):
        options = _parsed(f"--role={role}")
        assert _descriptions(options) == ["tcp:8080:interface=127.0.0.1"]
        assert options["listen-notice"].startswith(
            "no --users: the dashboard serves this machine only (127.0.0.1)")
        assert "--insecure-no-auth" in options["listen-notice"]


def test_listen_gets_the_loopback_interface_of_its_family():
    options = _parsed("--role=web", "--listen=tcp:9000", "--listen=tcp6:9001",
                      "--listen=unix:/tmp/resmon-test.sock")
    assert _descriptions(options) == [
        "tcp:9000:interface=127.0.0.1", "tcp6:9001:interface=\\:\\:1", "unix:/tmp/resmon-test.sock"]
    assert [l.option for l in options["listeners"]] == ["--listen"] * 3


def test_listen_replaces_port_unless_port_is_given_too():
    assert _descriptions(_parsed("--role=web", "--listen=tcp:9000")) == [
        "tcp:9000:interface=127.0.0.1"]
    assert _descriptions(_parsed("--role=web", "--listen=tcp:9000", "--port=9001")) == [
        "tcp:9000:interface=127.0.0.1", "tcp:9001:interface=127.0.0.1"]


def test_an_explicit_loopback_interface_is_kept():
    assert _descriptions(_parsed("--role=web", "--interface=127.0.0.1", "--port=1234")) == [
        "tcp:1234:interface=127.0.0.1"]
    assert _descriptions(_parsed("--role=web", "--listen=tcp:1:interface=localhost")) == [
        "tcp:1:interface=localhost"]


def test_other_interfaces_without_users_need_insecure_no_auth(monkeypatch):
    line = _refused("--role=server", "--interface=0.0.0.0")
    assert line.startswith("twistd resmon: error: --interface: 'tcp:8080:interface=0.0.0.0' "
                           "reaches other machines")
    assert "--users FILE, or --insecure-no-auth" in line
    assert _refused("--role=web", "--listen=tcp:80:interface=10.1.2.3").startswith(
        "twistd resmon: error: --listen: 'tcp:80:interface=10.1.2.3' reaches other machines")
    # An endpoint type that cannot be kept to this machine (a socket systemd passes).
    monkeypatch.setattr(endpoints._SystemdParser, "_sddaemon", ListenFDs([3], ["http"]))
    assert _refused("--role=web", "--listen=systemd:domain=INET:index=0").startswith(
        "twistd resmon: error: --listen: 'systemd:domain=INET:index=0' reaches other machines")


def test_insecure_no_auth_serves_every_interface_and_warns():
    options = _parsed("--role=web", "--insecure-no-auth")
    assert _descriptions(options) == ["tcp:8080"]
    assert options["listen-notice"] == (
        "--insecure-no-auth: serving the whole fleet without authentication to anyone who "
        "reaches tcp:8080")
    assert _descriptions(_parsed("--role=web", "--insecure-no-auth", "--interface=0.0.0.0")) == [
        "tcp:8080:interface=0.0.0.0"]


def _usersFile(tmp_path):
    from resmon.auth.usersfile import Users, writeUsers
    path = str(tmp_path / "users.toml")
    writeUsers(path, Users(()))
    return path


def test_with_users_descriptions_are_served_as_given(tmp_path):
    users = _usersFile(tmp_path)
    options = _parsed("--role=web", "--listen=tcp:9000", users=users)
    assert _descriptions(options) == ["tcp:9000"] and options["listen-notice"] is None
    assert _refused("--role=web", "--insecure-no-auth", users=users) == (
        "twistd resmon: error: --insecure-no-auth: not with --users, which authenticates "
        "(see 'twistd resmon --help')")


def test_a_bad_description_stops_with_one_line_naming_listen():
    assert _refused("--role=web", "--listen=carrier-pigeon:8080") == (
        "twistd resmon: error: --listen: 'carrier-pigeon:8080': Unknown endpoint type: "
        "'carrier-pigeon' (see 'twistd resmon --help')")
    assert _refused("--role=web", "--listen=tcp:eighty").startswith(
        "twistd resmon: error: --listen: 'tcp:eighty': invalid literal")
    assert _refused("--role=web", "--listen=ssl:8443:privateKey=/nonexistent/key.pem").startswith(
        "twistd resmon: error: --listen: 'ssl:8443:privateKey=/nonexistent/key.pem': ")
    assert "\n" not in _refused("--role=web", "--listen=tcp:1:colour=blue")


def test_listen_and_insecure_no_auth_mean_nothing_for_an_agent():
    assert _refused("--role=agent", "--listen=tcp:1").startswith(
        "twistd resmon: error: --listen: means nothing for --role=agent")
    assert _refused("--role=agent", "--insecure-no-auth").startswith(
        "twistd resmon: error: --insecure-no-auth: means nothing for --role=agent")
    # The metrics port of a role without a web server keeps --interface as given.
    assert _parsed("--role=agent", "--interface=0.0.0.0", "--metrics-port=9100")["listeners"] == []


def test_an_ssl_listener_is_checked_and_gives_an_https_dashboard(tmp_path):
    ca = authority("resmon listen test CA")
    server = issue(ca, "localhost", dnsNames=["localhost"], ipAddresses=["127.0.0.1"])
    (tmp_path / "key.pem").write_bytes(server.keyPEM)
    (tmp_path / "cert.pem").write_bytes(server.certificatePEM)
    options = _parsed("--role=web", f"--listen=ssl:8443:privateKey={tmp_path}/key.pem:"
                      f"certKey={tmp_path}/cert.pem")
    listener, = options["listeners"]
    assert listener.description.endswith(":interface=127.0.0.1")
    assert (listener.kind, listener.port, listener.scheme) == ("ssl", 8443, "https")
    assert dashboardURL(listener.interface, listener.port, listener.scheme) == (
        "https://127.0.0.1:8443/")


def test_the_service_tree_listens_on_every_listener_of_one_site():
    options = _parsed("--role=web", "--listen=tcp:0", "--port=0", "--broker=amqp://u:p@h/")
    top = makeService(options)
    web = top.getServiceNamed("web")
    assert web.listen == ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]
    strports = [s for s in web if hasattr(s, "endpoint")]
    assert len(strports) == 2 and {s.factory for s in strports} == {web.connections}
    assert isinstance(top, ListeningService)
    readiness = top.getServiceNamed("readiness")
    assert readiness.notices == [options["listen-notice"]] and readiness.warnings == []
    assert readiness.interface == "127.0.0.1"


def test_insecure_no_auth_is_a_warning_at_start():
    options = _parsed("--role=web", "--insecure-no-auth", "--broker=amqp://u:p@h/")
    readiness = makeService(options).getServiceNamed("readiness")
    assert readiness.warnings == [options["listen-notice"]] and readiness.notices == []


def test_web_listeners_directly():
    listeners, notice = webListeners(["tcp:1"], None, "", authenticated=False, insecure=False)
    assert [l.description for l in listeners] == ["tcp:1:interface=127.0.0.1"]
    with pytest.raises(ListenError) as raised:
        webListeners([], 80, "::", authenticated=False, insecure=False)
    assert raised.value.option == "--interface"


def test_a_port_in_use_names_the_option_that_gave_it():
    options = _parsed("--role=web", "--listen=tcp:9000", "--port=9001", "--interface=127.0.0.1",
                      "--broker=amqp://u:p@h/")
    top = makeService(options)
    assert top.portOptions[9000] == "--listen" and top.portOptions[9001] == "--port"
