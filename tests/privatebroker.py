"""
A RabbitMQ node of a test's own, for tests that stop the broker or need a
configuration the shared one does not have (a TLS listener).
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue

from support import freePort

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
RABBITMQ_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"


class PrivateBroker:
    """
    A RabbitMQ node of its own (name, ports, data and logs in a temporary
    directory), so a test may stop it without disturbing anyone else's
    broker.

    @param config: lines of rabbitmq.conf (new-style) for this node; the
        plain listener on C{port} is always there. C{{base}} in them is
        the node's directory, where L{writeFile} puts files it needs.
    """

    def __init__(self, config=()):
        self.node = f"resmon-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = freePort()
        self.base = tempfile.mkdtemp(prefix="resmon-broker-")
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.writeFile("enabled_plugins", b"[].\n")
        self.writeFile("rabbitmq.conf", "".join(
            line.format(base=self.base) + "\n"
            for line in [f"listeners.tcp.default = 127.0.0.1:{self.port}", *config]).encode())
        self.env = dict(
            os.environ,
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_DIST_PORT=str(freePort()),
            RABBITMQ_MNESIA_BASE=os.path.join(self.base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.base, "log"),
            RABBITMQ_PID_FILE=os.path.join(self.base, "pid"),
            # Not the system's configuration: it pins the listener to 5672.
            RABBITMQ_CONFIG_FILE=os.path.join(self.base, "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.base, "enabled_plugins"),
        )

    def writeFile(self, name, content):
        """
        Write C{content} (bytes) to C{name} in the node's directory, readable
        by the node; return its path.
        """
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(content)
        if os.geteuid() == 0:
            # rabbitmq-server started by root runs the node as user rabbitmq.
            user = pwd.getpwnam("rabbitmq")
            for owned in (self.base, path):
                os.chown(owned, user.pw_uid, user.pw_gid)
        return path

    def start(self, timeout=60):
        subprocess.run([RABBITMQ_SERVER, "-detached"], env=self.env, check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # await_startup fails at once while the node has not registered yet.
            result = subprocess.run(
                [RABBITMQCTL, "-n", self.node, "await_startup", "--timeout", "20"],
                capture_output=True)
            if result.returncode == 0 and self.accepts():
                return
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"the private RabbitMQ node {self.node} did not start in {timeout} s "
                             f"(logs in {self.base}/log)")

    def accepts(self, port=None):
        try:
            socket.create_connection(("127.0.0.1", port or self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        subprocess.run([RABBITMQCTL, "-n", self.node, "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)

    def ctlOutput(self, *args):
        """
        What C{rabbitmqctl} prints for C{args} (blocking).
        """
        return subprocess.run([RABBITMQCTL, "-n", self.node, *args], capture_output=True,
                              check=True, timeout=60).stdout.decode()

    @defer.inlineCallbacks
    def ctl(self, *args):
        out, err, code = yield getProcessOutputAndValue(
            RABBITMQCTL, ["-n", self.node] + list(args), env=dict(os.environ))
        assert code == 0, (args, out, err)

    @defer.inlineCallbacks
    def whenAccepting(self, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.accepts():
            assert time.monotonic() < deadline, f"{self.node} did not accept connections in {timeout} s"
            yield task.deferLater(reactor, 0.05, lambda: None)
