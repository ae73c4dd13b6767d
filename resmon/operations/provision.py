"""
C{resmon-provision-agent}: print the RabbitMQ commands that give one
agent a broker user of its own, allowed to publish its host's measures
and nothing else (C{docs/security.md}, "Agents on the bus").

It runs nothing: the operator reads the commands and runs them where
C{rabbitmqctl} reaches the broker. The password is generated (or prompted
for with C{--prompt-password}) and printed once, in the commands and in
the agent's C{--broker} URL.
"""

import argparse
import getpass
import re
import secrets
import shlex
import sys
from urllib.parse import quote

from resmon import topics

DEFAULT_EXCHANGE = "resmon"
DEFAULT_VHOST = "/"


def anchored(text):
    """
    A regular expression (RabbitMQ's, PCRE) matching exactly C{text}.
    """
    return "^" + re.escape(text) + "$"


def provisionCommands(host, user, password, vhost=DEFAULT_VHOST, exchange=DEFAULT_EXCHANGE):
    """
    The C{rabbitmqctl} commands, as argument lists, that make broker user
    C{user} able to publish the measures of C{host} (routing key
    C{<host word>.measure}) to C{exchange}, and nothing else:

     - configure C{^$}: it declares nothing (the agent only checks,
       passively, that the exchange exists; an analyzer declares it);
     - write on the exchange alone, read nothing;
     - on the topic exchange, write only its host's measure key.

    C{--} ends each command's options: a password or a user name that
    begins with C{-} (one generated password in 64) is not taken for one.
    """
    key = topics.routingKey(host, topics.MEASURE)
    return [
        ["rabbitmqctl", "add_user", "--", user, password],
        ["rabbitmqctl", "set_permissions", "-p", vhost, "--", user, "^$", anchored(exchange), "^$"],
        ["rabbitmqctl", "set_topic_permissions", "-p", vhost, "--", user, exchange, anchored(key),
         "^$"],
    ]


def agentBrokerURL(user, password, brokerHost, vhost=DEFAULT_VHOST):
    """
    The agent's C{--broker} URL for C{user} on C{brokerHost}.
    """
    path = "" if vhost == "/" else quote(vhost, safe="")
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{brokerHost}:5672/{path}"


def generatedPassword(token=secrets.token_urlsafe):
    """
    A new broker password, which never begins with C{-}: the printed
    commands end their options with C{--}, but RabbitMQ's maintainers
    advise against such passwords (rabbitmq-cli issue 393: not every
    rabbitmqctl tells them from options), and one in 64 would.
    """
    password = token(24)
    while password.startswith("-"):
        password = token(24)
    return password


def render(host, user, password, vhost, exchange, brokerHost):
    """
    What C{resmon-provision-agent} prints: the commands, then how the
    agent and the analyzer use the user.
    """
    lines = [f"# Broker user {user!r} for the resmon agent of host {host!r}: it may publish",
             f"# {topics.routingKey(host, topics.MEASURE)} to exchange {exchange!r} "
             f"(vhost {vhost!r}) and nothing else.",
             "# Run on a machine where rabbitmqctl reaches the broker. The password appears",
             "# only here: keep this output private.", ""]
    lines += [shlex.join(command) for command in provisionCommands(host, user, password, vhost,
                                                                   exchange)]
    lines += ["", f"# The agent, on {host} (the URL is better kept in RESMON_BROKER or a",
              "# --config file than on the command line):",
              "#   " + shlex.join(["twistd", "resmon", "--role=agent", f"--name={host}",
                                 "--exchange=" + exchange,
                                 "--broker=" + agentBrokerURL(user, password, brokerHost, vhost)]),
              "# The analyzer's --agent-users file:",
              f"#   {_tomlKey(user)} = \"{host}\"", ""]
    return "\n".join(lines)


def _tomlKey(user):
    return user if re.fullmatch(r"[A-Za-z0-9_-]+", user) else '"' + user.replace('"', '\\"') + '"'


def parser():
    p = argparse.ArgumentParser(
        prog="resmon-provision-agent",
        description="Print the rabbitmqctl commands that create a broker user allowed to "
                    "publish one host's measures and nothing else.")
    p.add_argument("host", help="the host name the agent reports (its --name)")
    p.add_argument("--user", help="broker user name (default: agent-<host>)")
    p.add_argument("--vhost", default=DEFAULT_VHOST, help="RabbitMQ vhost (default: /)")
    p.add_argument("--exchange", default=DEFAULT_EXCHANGE,
                   help="the topic exchange (default: resmon)")
    p.add_argument("--broker-host", default="BROKER-HOST",
                   help="the broker's host name, for the agent's --broker URL")
    p.add_argument("--prompt-password", action="store_true",
                   help="ask for the password (twice) instead of generating one")
    return p


def main(argv=None, stdout=None, prompt=getpass.getpass):
    """
    The console script.

    @return: the exit status.
    """
    stdout = stdout if stdout is not None else sys.stdout
    arguments = parser().parse_args(argv)
    host = arguments.host.strip()
    if not host:
        print("resmon-provision-agent: error: the host must not be empty", file=sys.stderr)
        return 2
    user = arguments.user or f"agent-{topics.hostWord(host)}"
    if arguments.prompt_password:
        password = prompt(f"password for {user}: ")
        if not password or password != prompt("again: "):
            print("resmon-provision-agent: error: the passwords are empty or differ",
                  file=sys.stderr)
            return 2
    else:
        password = generatedPassword()
    stdout.write(render(host, user, password, arguments.vhost, arguments.exchange,
                        arguments.broker_host))
    return 0


def run():
    sys.exit(main())
