"""
What the agent costs at 1 Hz, side by side with the usual collectors sampling the same things at the same rate.

Runs, at once and for the same time on this machine: the real
C{twistd resmon --role=agent} publishing to the broker every second, and
the same agent without twistd (C{resmon-agent});
Debian's C{prometheus-node-exporter} (only the collectors of what the agent
samples: cpu, meminfo, loadavg, diskstats, netdev, filesystem) scraped once
a second by this script; C{collectd} with C{Interval 1} and the cpu, memory,
swap, load, disk, df and interface plugins writing CSV; C{glances} in quiet
mode exporting CSV every second. After a warm-up, it reads each process's
CPU time (user + system) and memory over the same window, and prints the
table. Peers not installed are left out, saying so
(C{apt-get install prometheus-node-exporter collectd-core glances}).

Issue 16's goal for the agent: at most 0.2 % of a core and 35 MiB RSS.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import TWISTD, brokerUnreachableReason, brokerURL, freePort, uniqueName  # noqa: E402

# The agent without twistd (resmon.agentrunner), installed beside twistd.
RESMON_AGENT = os.path.join(os.path.dirname(TWISTD), "resmon-agent")

COLLECTD_CONF = """\
Interval 1
FQDNLookup false
LoadPlugin cpu
LoadPlugin memory
LoadPlugin swap
LoadPlugin load
LoadPlugin disk
LoadPlugin df
LoadPlugin interface
LoadPlugin csv
<Plugin cpu>
  ReportByCpu true
  ReportByState true
  ValuesPercentage true
</Plugin>
<Plugin csv>
  DataDir "{dir}/csv"
  StoreRates true
</Plugin>
"""

NODE_EXPORTER_COLLECTORS = ("cpu", "meminfo", "loadavg", "diskstats", "netdev", "filesystem")


class Peer:
    """
    One process measured: how to start it, and what was read of it.
    """

    def __init__(self, name, argv, scrapeURL=None, env=None):
        self.name = name
        self.argv = argv
        self.scrapeURL = scrapeURL
        self.env = env
        self.process = None
        self.scrapes = 0
        self.peakRSS = 0

    def start(self, logDir):
        log = open(os.path.join(logDir, self.name.replace(" ", "_") + ".log"), "wb")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.env)
        self.handle = psutil.Process(self.process.pid)

    def alive(self):
        return self.process.poll() is None

    def cpuSeconds(self):
        times = self.handle.cpu_times()
        return times.user + times.system

    def memory(self):
        info = self.handle.memory_full_info()
        self.peakRSS = max(self.peakRSS, info.rss)
        return info

    def scrape(self):
        if self.scrapeURL is None:
            return
        try:
            with urllib.request.urlopen(self.scrapeURL, timeout=2) as answer:
                answer.read()
            self.scrapes += 1
        except OSError:
            pass

    def stop(self):
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def peers(arguments, workDir, exchange):
    agentOptions = [f"--broker={arguments.broker}", f"--exchange={exchange}",
                    f"--interval={arguments.interval}"]
    found = [Peer("twistd agent", [TWISTD, "-n", "--pidfile=", "resmon", "--role=agent"]
                  + agentOptions, env=dict(os.environ, PYTHONUNBUFFERED="1")),
             # As the shipped unit runs it: its byte code in its own directory.
             Peer("resmon-agent", [RESMON_AGENT] + agentOptions,
                  env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="",
                           PYTHONPYCACHEPREFIX=os.path.join(workDir, "pycache")))]
    missing = []
    exporter = shutil.which("prometheus-node-exporter")
    if exporter:
        port = freePort()
        found.append(Peer("node-exporter", [
            exporter, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
            *(f"--collector.{name}" for name in NODE_EXPORTER_COLLECTORS)],
            scrapeURL=f"http://127.0.0.1:{port}/metrics"))
    else:
        missing.append("prometheus-node-exporter")
    collectd = shutil.which("collectd") or ("/usr/sbin/collectd" if os.path.exists(
        "/usr/sbin/collectd") else None)
    if collectd:
        conf = os.path.join(workDir, "collectd.conf")
        with open(conf, "w") as f:
            f.write(COLLECTD_CONF.format(dir=workDir))
        found.append(Peer("collectd", [collectd, "-f", "-C", conf,
                                       "-P", os.path.join(workDir, "collectd.pid")]))
    else:
        missing.append("collectd-core")
    glances = shutil.which("glances")
    if glances:
        found.append(Peer("glances", [
            glances, "-q", "-t", str(arguments.interval), "--export", "csv",
            "--export-csv-file", os.path.join(workDir, "glances.csv")]))
    else:
        missing.append("glances")
    return found, missing


def deleteExchange(broker, exchange):
    try:
        import pika
        connection = pika.BlockingConnection(pika.URLParameters(broker))
        connection.channel().exchange_delete(exchange)
        connection.close()
    except Exception as e:  # the benchmark's figures stand without the cleanup
        print(f"could not delete exchange {exchange}: {e}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--broker", default=brokerURL())
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two samples, for every peer")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    arguments = parser.parse_args()
    reason = brokerUnreachableReason(arguments.broker)
    if reason:
        raise SystemExit(reason)
    workDir = tempfile.mkdtemp(prefix="resmon-agent-cost-")
    exchange = uniqueName("resmon.bench.agentcost")
    measured, missing = peers(arguments, workDir, exchange)
    for name in missing:
        print(f"{name} is not installed: left out (apt-get install {name})")
    try:
        for peer in measured:
            peer.start(workDir)
        deadline = time.monotonic() + arguments.warmup
        while time.monotonic() < deadline:
            for peer in measured:
                peer.scrape()
            time.sleep(arguments.interval)
        for peer in measured:
            if not peer.alive():
                raise SystemExit(f"{peer.name} exited during the warm-up: see {workDir}")
        start = time.monotonic()
        before = {peer.name: peer.cpuSeconds() for peer in measured}
        scrapesBefore = {peer.name: peer.scrapes for peer in measured}
        next_ = start
        while True:
            next_ += arguments.interval
            for peer in measured:
                peer.scrape()
                peer.memory()
            pause = next_ - time.monotonic()
            if next_ - start >= arguments.duration:
                break
            if pause > 0:
                time.sleep(pause)
        elapsed = time.monotonic() - start
        rows = []
        for peer in measured:
            if not peer.alive():
                raise SystemExit(f"{peer.name} exited while measured: see {workDir}")
            cpu = peer.cpuSeconds() - before[peer.name]
            memory = peer.memory()
            rows.append((peer.name, 100.0 * cpu / elapsed, 1000.0 * cpu * arguments.interval / elapsed,
                         memory.rss / 2**20, memory.uss / 2**20, peer.peakRSS / 2**20,
                         peer.scrapes - scrapesBefore[peer.name]))
    finally:
        for peer in measured:
            peer.stop()
        deleteExchange(arguments.broker, exchange)
    print(f"\n{elapsed:.0f} s at one sample every {arguments.interval:g} s, after {arguments.warmup:g} s "
          f"of warm-up; {psutil.cpu_count()} cores")
    print(f"{'':16} {'% of a core':>12} {'CPU ms/sample':>14} {'RSS MiB':>8} {'USS MiB':>8} "
          f"{'peak RSS':>9}")
    for name, percent, perSample, rss, uss, peak, scrapes in rows:
        note = f"  ({scrapes} scrapes)" if name == "node-exporter" else ""
        print(f"{name:16} {percent:12.3f} {perSample:14.2f} {rss:8.1f} {uss:8.1f} {peak:9.1f}{note}")
    print()
    for agent in rows[:2]:
        print(f"goal for the agent ({agent[0]}): <= 0.2 % of a core and <= 35 MiB RSS: "
              f"{'met' if agent[1] <= 0.2 and agent[5] <= 35 else 'NOT met'} "
              f"({agent[1]:.3f} %, peak {agent[5]:.1f} MiB)")
    print("node-exporter's figure leaves out its scraper (this script); collectd and glances "
          "sample on their own.")
    shutil.rmtree(workDir, ignore_errors=True)


if __name__ == "__main__":
    main()
