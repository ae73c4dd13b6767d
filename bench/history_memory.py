"""
Memory cost of the web role's history: fills a FleetHistory as 1,000 hosts
reporting every second for the whole window would, and measures it with
tracemalloc; also times the snapshot of the whole fleet's history: the
default one (an overview, one point per 10 s), the full one for as many hosts
as one snapshot sends (50), and the reply to
a WebSocket history request for one host.

Usage: python bench/history_memory.py [--hosts N] [--interval S] [--window S] [--cores N]
"""

import argparse
import json
import random
import time
import tracemalloc

from twisted.internet.task import Clock

from resmon.webserver.fanout import MAX_FULL_HISTORY_HOSTS, EventFanout
from resmon.webserver.history import DEFAULT_MAX_POINTS, DEFAULT_WINDOW, FleetHistory
from resmon.webserver.subscriptions import parseQuery


def analysis(host, seq, ts, cores, rng):
    perCore = [round(rng.uniform(0, 100), 1) for _ in range(cores)]
    return {
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts + 0.002, "level": "MEDIUM", "levels": {"cpu": "LOW", "memory": "MEDIUM"},
        "metrics": {
            "cpu": {"percent": sum(perCore) / cores, "per_core": perCore},
            "memory": {"total": 16 << 30, "used": 9 << 30, "available": 7 << 30,
                       "percent": rng.uniform(20, 90)},
            "load": [rng.uniform(0, 8), 1.0, 1.0],
            "disks": [{"mount": "/", "percent": rng.uniform(10, 95)},
                      {"mount": "/var", "percent": rng.uniform(10, 95)}],
            "net_io": {"bytes_sent_per_s": rng.uniform(0, 1e7), "bytes_recv_per_s": rng.uniform(0, 1e8),
                       "packets_sent_per_s": 10.0, "packets_recv_per_s": 12.0},
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW)
    parser.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS)
    parser.add_argument("--cores", type=int, default=8)
    args = parser.parse_args()

    rng = random.Random(1)
    clock = Clock()
    start = 1_763_891_234.125
    clock.advance(start)
    history = FleetHistory(clock, window=args.window, maxPoints=args.max_points)
    hosts = [f"host-{i:04d}.dc1.example.com" for i in range(args.hosts)]
    steps = int(args.window / args.interval)
    # The documents are built outside the measurement: only what the history keeps counts.
    samples = [analysis(host, 0, start, args.cores, rng) for host in hosts[:50]]

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for step in range(steps + 1):
        ts = start + step * args.interval
        clock.advance(args.interval)
        for i, host in enumerate(hosts):
            document = dict(samples[i % len(samples)], host=host, seq=step, ts=ts)
            history.add(document)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    # CPU cost of adding one analysis, untraced (tracemalloc slows the loop above).
    timed = FleetHistory(clock, window=args.window, maxPoints=args.max_points)
    documents = [dict(samples[i % len(samples)], host=host) for i, host in enumerate(hosts)]
    began = time.perf_counter()
    for step in range(20):
        for document in documents:
            document["seq"], document["ts"] = step, start + step * args.interval
            timed.add(document)
    addCost = (time.perf_counter() - began) / (20 * len(documents))

    points = history.pointCount()
    encoded = sum(len(p) for host in history.hosts() for p in history.encodedPoints(host))
    fanout = EventFanout(history=history)
    for i, host in enumerate(hosts):
        latest = dict(samples[i % len(samples)], host=host, seq=steps, ts=start + steps * args.interval)
        fanout.latest.update(latest, json.dumps(latest, separators=(",", ":")).encode())

    def timed(build):
        began = time.perf_counter()
        body = build()
        built = time.perf_counter() - began
        began = time.perf_counter()
        parsed = json.loads(body)
        return body, parsed, built, time.perf_counter() - began

    default, parsedDefault, defaultTime, defaultParse = timed(lambda: fanout.snapshotBody(parseQuery({})))
    # Full history is sent for at most MAX_FULL_HISTORY_HOSTS hosts per snapshot: time that many.
    fullHosts = hosts[:MAX_FULL_HISTORY_HOSTS]
    snapshot, parsed, elapsed, parseTime = timed(
        lambda: fanout.snapshotBody(parseQuery({"history": ["1"], "hosts": [",".join(fullHosts)]})))
    fullPoints = sum(len(v) for v in parsed["history"].values())
    assert fullPoints == sum(len(history.encodedPoints(host)) for host in fullHosts), fullPoints
    overview = sum(len(v) for v in parsedDefault["history"].values())
    historyBytes = len(default) - len(default.rsplit(b',"history":', 1)[0])
    reply, _, replyTime, _ = timed(lambda: fanout.historyReplyBody(hosts[0]))

    print(f"hosts                 {args.hosts}")
    print(f"interval              {args.interval} s, window {args.window:.0f} s, {args.cores} cores")
    print(f"points held           {points} ({points // max(args.hosts, 1)} per host)")
    print(f"memory held           {held / 2**20:.1f} MiB (tracemalloc)")
    print(f"per point             {held / max(points, 1):.0f} bytes, of which JSON {encoded / max(points, 1):.0f}")
    print(f"adding one analysis   {addCost * 1e6:.1f} us")
    print(f"default snapshot      {len(default) / 2**20:.1f} MiB, built in {defaultTime * 1000:.0f} ms "
          f"(json.loads of it: {defaultParse * 1000:.0f} ms)")
    print(f"  of which history    {historyBytes / 2**20:.1f} MiB, {overview // max(args.hosts, 1)} "
          f"[ts,cpu,mem] per host; the rest is the latest analysis of each host")
    print(f"full snapshot         {len(snapshot) / 2**20:.1f} MiB for {len(fullHosts)} hosts (the most "
          f"one snapshot sends), built in {elapsed * 1000:.0f} ms (json.loads of it: {parseTime * 1000:.0f} ms)")
    print(f"one host's history    {len(reply) / 2**10:.0f} KiB, built in {replyTime * 1000:.1f} ms")


if __name__ == "__main__":
    main()
