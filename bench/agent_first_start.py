"""
resmon-agent's memory on its first start after an install, on the next start, and where Python
may write no byte code: each run starts the installed `resmon-agent` on the real broker with its
own PYTHONPYCACHEPREFIX (as the shipped unit sets it), waits --seconds, and prints its RSS and
how long it took to connect. The first start has a child write the `-OO` byte code of every
module the agent loads before it starts again (resmon/agentrunner.py); without it, the agent
compiles what it imports and holds more.

Usage: python bench/agent_first_start.py [--broker URL] [--seconds S]
Needs RabbitMQ and resmon installed (the resmon-agent beside this interpreter).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from twisted.internet import threads

from _common import argumentParser, runBenchmark

AGENT = os.path.join(os.path.dirname(sys.executable), "resmon-agent")


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def runAgent(broker, exchange, prefix, seconds, writeByteCode=True):
    """
    Run C{resmon-agent} for C{seconds} with C{prefix} as its
    C{PYTHONPYCACHEPREFIX}; return (RSS MiB, seconds to connect, whether
    it wrote its byte code first).
    """
    env = dict(os.environ, PYTHONPYCACHEPREFIX=prefix,
               PYTHONDONTWRITEBYTECODE="" if writeByteCode else "1")
    log = tempfile.TemporaryFile()
    began = time.monotonic()
    agent = subprocess.Popen([AGENT, f"--broker={broker}", f"--exchange={exchange}",
                              "--name=bench-first-start", "--interval=1"],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    connected = None
    try:
        while time.monotonic() - began < seconds:
            time.sleep(0.05)
            log.seek(0)
            output = log.read()
            if connected is None and b"connected to " in output:
                connected = time.monotonic() - began
            if agent.poll() is not None:
                raise SystemExit(f"resmon-agent ended: {output.decode(errors='replace')[-2000:]}")
        memory = rss(agent.pid)
    finally:
        agent.terminate()
        agent.wait(10)
    log.seek(0)
    return memory, connected, b"wrote the -OO byte code" in log.read()


def main(reactor, arguments, rig):
    def measure():
        top = tempfile.mkdtemp(prefix="resmon-first-start-")
        try:
            prefix = os.path.join(top, "pycache")
            rows = [("first start (writes its byte code)", runAgent(
                        rig.broker, rig.exchange, prefix, arguments.seconds)),
                    ("next start", runAgent(rig.broker, rig.exchange, prefix, arguments.seconds)),
                    ("no byte code written (PYTHONDONTWRITEBYTECODE)", runAgent(
                        rig.broker, rig.exchange, os.path.join(top, "none"), arguments.seconds,
                        writeByteCode=False))]
        finally:
            shutil.rmtree(top)
        print(f"resmon-agent at 1 Hz, RSS after {arguments.seconds:.0f} s")
        print(f"{'start':<50}{'RSS MiB':>9}{'connected after s':>19}{'wrote byte code':>17}")
        for label, (memory, connected, wrote) in rows:
            print(f"{label:<50}{memory:>9.1f}{connected or float('nan'):>19.2f}"
                  f"{'yes' if wrote else 'no':>17}")
    return threads.deferToThread(measure)


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, seconds=15.0))
