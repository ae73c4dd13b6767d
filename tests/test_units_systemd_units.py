"""
The systemd units in C{contrib/systemd}: what docs/operations.md promises
of them (C{.ci/verify-units} has C{systemd-analyze verify} check the rest).
"""

import configparser
import pathlib
import shlex

import pytest

UNITS = pathlib.Path(__file__).parent.parent / "contrib" / "systemd"


def _service(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser["Service"]


@pytest.mark.parametrize("name,role", [("resmon-agent.service", "agent"),
                                       ("resmon-server.service", "server")])
def test_units_are_notify_hardened_and_keep_secrets_off_the_command_line(name, role):
    service = _service(name)
    assert service["Type"] == "notify"
    assert service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == name.removesuffix(".service")
    assert service["NoNewPrivileges"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["EnvironmentFile"] == "/etc/resmon/broker.env"
    assert int(service["WatchdogSec"]) > 0
    argv = shlex.split(service["ExecStart"])
    if role == "agent":
        # The agent without twistd (resmon.agentrunner), in less memory.
        assert argv[0] == "/opt/resmon/venv/bin/resmon-agent"
    else:
        assert argv[:4] == ["/opt/resmon/venv/bin/twistd", "--nodaemon", "--pidfile=", "resmon"]
        assert f"--role={role}" in argv
    assert f"--config=/etc/resmon/{role}.toml" in argv
    assert not any(arg.startswith(("--broker", "-b")) for arg in argv)


def test_the_agent_keeps_its_byte_code_in_its_state_directory():
    """
    C{resmon-agent} runs under C{python -OO}, whose byte code pip does not
    write: the unit has it written where it may write, its
    C{StateDirectory=}, before its first start, for every start to load.
    """
    service = _service("resmon-agent.service")
    assert service["Environment"] == "PYTHONPYCACHEPREFIX=%S/resmon-agent/pycache"
    assert service["StateDirectory"] == "resmon-agent"


def test_the_server_keeps_its_state_in_its_state_directory():
    """
    Under C{DynamicUser=} and C{ProtectSystem=strict} the only writable
    place is the unit's C{StateDirectory=}: the server role (which runs the
    webhooks service and its SQLite registry) must be told to use it, not
    the default under a home directory it cannot write.
    """
    argv = shlex.split(_service("resmon-server.service")["ExecStart"])
    assert "--state-dir=${STATE_DIRECTORY}" in argv
