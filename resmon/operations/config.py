"""
C{twistd resmon --config FILE}: options read from a TOML file, and the
broker URL from the C{RESMON_BROKER} environment variable, so that secrets
stay off the command line (where every user sees them in C{ps}).

Every long option of C{twistd resmon --help} is a key of the file, under
its option name (C{port = 8080}, C{broker = "amqp://..."},
C{plugin-dir = ["/etc/resmon/plugins"]}). What the command line gives wins
over C{RESMON_BROKER}, which wins over the file. The file is turned into
arguments placed before the command line's, so the options' own checks
apply to its values as they do to the command line's.
"""

import difflib
import getopt
import os
import re
import stat
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.python import usage

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

BROKER_ENVIRONMENT = "RESMON_BROKER"

_URL = re.compile(r"amqps?://[^\s'\"]*")
# Keys that are not settings: they act at once, or name the file itself.
NOT_IN_FILE = ("config", "help")
# Options given once whose value is a comma-separated list: a TOML array
# of them is joined.
JOINED_LISTS = ("analyzers", "rules")
# Options given in the file as tables of plugin names to tables of options.
OPTION_TABLES = ("analyzer-option", "rule-option")


class ConfigError(usage.UsageError):
    """
    A config file that cannot be read, or a key or value in it that is
    wrong: one line naming the file and the key.
    """


@dataclass
class ConfigSource:
    """
    Where options came from besides the command line.

    @ivar path: the config file, or L{None}.
    @ivar fromFile: the option names the file set (and the command line
        did not).
    @ivar fromEnvironment: the option names set from the environment.
    @ivar fromCommandLine: the option names the command line gave.
    @ivar warnings: lines to log at start (e.g. a password in a file
        others may read).
    """

    path: str = None
    fromFile: set = field(default_factory=set)
    fromEnvironment: set = field(default_factory=set)
    fromCommandLine: set = field(default_factory=set)
    warnings: list = field(default_factory=list)

    def describe(self, name):
        """
        Where option C{name} came from, for the start log.
        """
        if name in self.fromEnvironment:
            return BROKER_ENVIRONMENT
        if name in self.fromFile:
            return self.path
        if name in self.fromCommandLine:
            return "command line"
        return "default"

    def explain(self, error):
        """
        The message of C{error} (a L{usage.UsageError} of the options'
        checks) naming the file or the variable when the option it
        complains about came from there, with the passwords of URLs in it
        masked.
        """
        message = _URL.sub(lambda match: maskURL(match.group()), str(error))
        if message.startswith("--"):
            name, colon, rest = message[2:].partition(":")
            if colon and name in self.fromEnvironment:
                return f"{BROKER_ENVIRONMENT}:{rest}"
            if colon and name in self.fromFile:
                return f"{self.path}: {name}:{rest}"
        return message


def maskURL(text):
    """
    C{text} (a broker URL) with its password replaced by C{***}.
    """
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return "(a URL that cannot be parsed)"
    if not password:
        return text
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return parts._replace(netloc=f"{name}:***@{host}").geturl()


def maskBroker(broker):
    """
    A L{resmon.bus.brokerurl.BrokerURL} written for logs: its password
    replaced by C{***}.
    """
    vhost = broker.vhost.replace("/", "%2F")
    return f"{broker.scheme}://{broker.username}:***@{broker.host}:{broker.port}/{vhost}"


def _hasPassword(url):
    try:
        return bool(isinstance(url, str) and urlsplit(url).password)
    except ValueError:
        return False


def loadConfig(path):
    """
    Read the TOML file at C{path}.

    @return: its top-level table, a L{dict}.
    @raise ConfigError: if it cannot be read or is not TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror or e}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}")


def _arguments(path, name, value, takesValue, repeatable):
    """
    The command-line arguments meaning C{name = value} of the file.
    """
    def bad(expected):
        return ConfigError(f"{path}: {name}: expected {expected}, not {value!r}")

    if not takesValue:
        if not isinstance(value, bool):
            raise bad("true or false")
        return [f"--{name}"] if value else []
    if isinstance(value, list) and (repeatable or name in JOINED_LISTS):
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise bad("a list of strings")
        if name in JOINED_LISTS:
            return [f"--{name}={','.join(str(v) for v in value)}"]
        return [f"--{name}={v}" for v in value]
    if isinstance(value, dict) and name in OPTION_TABLES:
        # [analyzer-option.usage] cpu = "30,80"; [rule-option.alert] for = 120
        arguments = []
        for analyzer, options in value.items():
            if not isinstance(options, dict):
                raise bad("a table of analyzer names to tables of options")
            for key, option in options.items():
                if isinstance(option, (dict, list)):
                    raise bad("a table of analyzer names to tables of options")
                arguments.append(f"--{name}={analyzer}.{key}={option}")
        return arguments
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad("a list of strings" if repeatable else "a string or a number")
    return [f"--{name}={value}"]


def _givenOnCommandLine(options, argv):
    """
    The options C{argv} gives, as a L{dict} of their names to their last
    values, or L{None} if it cannot be parsed (the options' own parsing
    then says why).
    """
    try:
        given, _ = getopt.getopt(argv, options.shortOpt, options.longOpt)
    except getopt.GetoptError:
        return None
    values = {}
    for flag, value in given:
        name = flag.lstrip("-")
        name = options.synonyms.get(name, options.synonyms.get(name.replace("-", "_"), name))
        values[name] = value
    return values


def argumentsWithConfig(options, argv, environ=None):
    """
    C{argv} with the settings of the config file it names (C{--config})
    and of C{RESMON_BROKER} put in front, leaving out those it gives itself.

    @param options: the L{usage.Options} that will parse the result.
    @param environ: the environment (default: L{os.environ}).
    @return: the arguments and a L{ConfigSource}.
    @raise ConfigError: for an unreadable file, an unknown key or a value
        of the wrong type.
    """
    environ = os.environ if environ is None else environ
    source = ConfigSource()
    given = _givenOnCommandLine(options, argv)
    if given is None:
        return list(argv), source
    source.fromCommandLine = set(given)
    prefix = []
    path = given.get("config")
    if path:
        source.path = path
        prefix += _fileArguments(options, path, loadConfig(path), given, source)
    broker = environ.get(BROKER_ENVIRONMENT)
    if broker and "broker" not in given:
        source.fromFile.discard("broker")
        prefix = [a for a in prefix if not a.startswith("--broker=")]
        prefix.append(f"--broker={broker}")
        source.fromEnvironment.add("broker")
    return prefix + list(argv), source


def _fileArguments(options, path, table, given, source):
    known = {}
    for long in options.longOpt:
        name = long.rstrip("=")
        known[name] = long.endswith("=")
    arguments = []
    for name, value in table.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {name!r}{hint}; the keys are the long "
                              "options of 'twistd resmon --help'")
        if name in NOT_IN_FILE:
            raise ConfigError(f"{path}: {name}: cannot be set in a config file")
        if name in given:
            continue
        repeatable = not hasattr(options._dispatch.get(name), "coerce") and known[name]
        arguments += _arguments(path, name, value, known[name], repeatable)
        source.fromFile.add(name)
    if _hasPassword(table.get("broker")):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            source.warnings.append(
                f"{path} holds the broker password and other users may read it "
                f"(mode {stat.S_IMODE(mode):04o}); make it readable by resmon's user only "
                f"(chmod 600), or put the URL in {BROKER_ENVIRONMENT}")
    return arguments
