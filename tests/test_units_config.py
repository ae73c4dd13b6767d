"""
Tests for L{resmon.operations.config}: C{--config FILE} and C{RESMON_BROKER} as
L{resmon.tap.Options} parses them.
"""

import os

import pytest

from resmon.operations.config import BROKER_ENVIRONMENT, argumentsWithConfig, maskURL
from resmon.tap import Options


@pytest.fixture(autouse=True)
def noBrokerInEnvironment(monkeypatch):
    monkeypatch.delenv(BROKER_ENVIRONMENT, raising=False)


def _config(tmp_path, text, mode=0o600):
    path = tmp_path / "resmon.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def _parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def _error(*argv):
    with pytest.raises(SystemExit) as e:
        _parse(*argv)
    text = str(e.value.code)
    assert "\n" not in text
    return text


def test_the_file_sets_options_under_their_long_names(tmp_path):
    path = _config(tmp_path, """
role = "web"
port = 9123
interface = "127.0.0.1"
exchange = "from-file"
max-queued-mib = 8.5
broker = "amqp://resmon:s3cret@rabbit.example:5673/fleet"
allowed-host = ["dash.example.com", "other.example.com"]
""")
    options = _parse(f"--config={path}")
    assert options["role"] == "web"
    assert options["port"] == 9123
    assert options["interface"] == "127.0.0.1"
    assert options["exchange"] == "from-file"
    assert options["max-queued-mib"] == 8.5
    assert (options["broker"].password, options["broker"].port, options["broker"].vhost) == (
        "s3cret", 5673, "fleet")
    assert options["allowed-hosts"] == ["dash.example.com", "other.example.com"]
    assert options.configSource.describe("port") == path
    assert options.configSource.describe("name") == "default"
    assert _parse("--name=n").configSource.describe("name") == "command line"


def test_the_command_line_wins_over_the_file(tmp_path):
    path = _config(tmp_path, """
role = "web"
port = 9123
exchange = "from-file"
allowed-host = ["dash.example.com"]
""")
    options = _parse("--port", "9200", f"--config={path}", "--allowed-host=cli.example.com",
                     "-e", "from-cli")
    assert options["port"] == 9200
    assert options["exchange"] == "from-cli"
    # A repeatable option given on the command line replaces the file's list.
    assert options["allowed-hosts"] == ["cli.example.com"]
    assert options["role"] == "web"


def test_analyzer_options_as_a_table_and_analyzers_as_a_list(tmp_path):
    path = _config(tmp_path, """
role = "analyzer"
analyzers = ["usage", "disk"]

[analyzer-option.usage]
cpu = "30,80"
""")
    options = _parse(f"--config={path}")
    assert [a.name for a in options["analyzer-plugins"]] == ["usage", "disk"]
    assert options["analyzer-options"] == {"usage": {"cpu": "30,80"}}


def test_flags_are_booleans(tmp_path, capsys):
    path = _config(tmp_path, "list-analyzers = true\n")
    with pytest.raises(SystemExit) as e:
        _parse(f"--config={path}")
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out
    path = _config(tmp_path, "list-analyzers = false\n")
    assert not _parse(f"--config={path}")["list-analyzers"]
    assert _error(f"--config={path.replace('.toml', '-none.toml')}").startswith(
        "twistd resmon: error: --config: cannot read ")
    path = _config(tmp_path, 'list-analyzers = "yes"\n')
    assert f"{path}: list-analyzers: expected true or false, not 'yes'" in _error(f"--config={path}")


def test_every_long_option_can_be_a_key(tmp_path):
    """
    Every option of C{twistd resmon --help} but C{--help} and C{--config}
    is a key of the file and becomes that option's argument.
    """
    longOptions = Options().longOpt
    assert len(longOptions) > 40
    for option in longOptions:
        name = option.rstrip("=")
        if name in ("help", "config"):
            continue
        value = '"x"' if option.endswith("=") else "true"
        path = _config(tmp_path, f"{name} = {value}\n")
        arguments, source = argumentsWithConfig(Options(), [f"--config={path}"], environ={})
        expected = f"--{name}=x" if option.endswith("=") else f"--{name}"
        assert arguments == [expected, f"--config={path}"]
        assert source.fromFile == {name}


def test_unknown_keys_and_bad_values_are_one_line_naming_key_and_file(tmp_path):
    for text, expected in [
        ("prot = 8080\n", "{path}: unknown key 'prot' (did you mean 'port'?)"),
        ("help = true\n", "{path}: help: cannot be set in a config file"),
        ("config = 'other.toml'\n", "{path}: config: cannot be set in a config file"),
        ("port = 70000\n", "{path}: port: must be between 0 and 65535, not '70000'"),
        ("port = 'eighty'\n", "{path}: port: expected an integer, not 'eighty'"),
        ("port = [1]\n", "{path}: port: expected a string or a number, not [1]"),
        ("interval = true\n", "{path}: interval: expected a string or a number, not True"),
        ("role = 'bogus'\n", "{path}: role: unknown role 'bogus'"),
        ("plugin-dir = [{ a = 1 }]\n", "{path}: plugin-dir: expected a list of strings"),
        ("[analyzer-option]\nusage = 3\n", "{path}: analyzer-option: expected a table"),
        ("port = \n", "{path}: not valid TOML: "),
    ]:
        path = _config(tmp_path, text)
        assert expected.format(path=path) in _error(f"--config={path}"), text


def test_broker_from_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    path = _config(tmp_path, 'role = "agent"\nbroker = "amqp://a:file@file.example/"\n')
    monkeypatch.setenv(BROKER_ENVIRONMENT, "amqp://b:env@env.example/")
    options = _parse(f"--config={path}")
    assert (options["broker"].host, options["broker"].password) == ("env.example", "env")
    assert options.configSource.describe("broker") == BROKER_ENVIRONMENT
    options = _parse(f"--config={path}", "--broker=amqp://c:cli@cli.example/")
    assert options["broker"].host == "cli.example"
    # Without a file too.
    options = _parse("--role=agent")
    assert options["broker"].host == "env.example"


def test_a_bad_broker_url_is_named_by_its_source_with_the_password_masked(tmp_path, monkeypatch):
    monkeypatch.setenv(BROKER_ENVIRONMENT, "amqp://b:hunter2@env.example:99999/")
    text = _error("--role=agent")
    assert text.startswith("twistd resmon: error: RESMON_BROKER: 'amqp://b:***@env.example:99999/'")
    assert "hunter2" not in text
    monkeypatch.delenv(BROKER_ENVIRONMENT)
    path = _config(tmp_path, 'broker = "amqp://b:hunter2@file.example:99999/"\n')
    text = _error(f"--config={path}")
    assert text.startswith(f"twistd resmon: error: {path}: broker: 'amqp://b:***@file.example")
    assert "hunter2" not in text


def test_a_password_in_a_file_others_may_read_is_warned_about(tmp_path):
    path = _config(tmp_path, 'broker = "amqp://a:pw@h/"\n', mode=0o640)
    warnings = _parse(f"--config={path}").configSource.warnings
    assert len(warnings) == 1 and path in warnings[0] and "0640" in warnings[0]
    os.chmod(path, 0o600)
    assert _parse(f"--config={path}").configSource.warnings == []
    # No password, nothing to warn about.
    path = _config(tmp_path, 'broker = "amqp://h/"\nport = 1\n', mode=0o644)
    assert _parse(f"--config={path}").configSource.warnings == []


def test_unparsable_command_lines_are_left_to_the_options():
    arguments, source = argumentsWithConfig(Options(), ["--no-such-option"], environ={})
    assert arguments == ["--no-such-option"] and source.path is None
    assert "option --no-such-option not recognized" in _error("--no-such-option")


def test_mask_url():
    assert maskURL("amqp://u:p@h:5672/v") == "amqp://u:***@h:5672/v"
    assert maskURL("amqps://u@h/") == "amqps://u@h/"
    assert maskURL("amqp://h") == "amqp://h"
