"""
Latency of the host API with a large fleet: a real `twistd resmon --role=web`
on the real broker, fed one analysis of each of N hosts (20,000 by default,
so --max-hosts is raised to hold them), then timed from a plain HTTP client:
`GET /api/hosts/<host>` for random hosts (by name and by routing word) and
`GET /api/hosts` (the whole fleet).

Usage: python bench/api_hosts_latency.py [--broker URL] [--hosts 20000] [--requests 200]
Needs RabbitMQ and resmon installed (the twistd beside this interpreter).
"""

import json
import random
import time

from twisted.internet import defer, task
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from _common import argumentParser, runBenchmark
from resmon.topics import hostWord


def analysis(host):
    cores = [12.5] * 8
    return json.dumps({
        "v": 1, "kind": "analysis", "host": host, "seq": 1, "ts": time.time(), "interval": 1.0,
        "analyzed_at": time.time(), "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
        "metrics": {"cpu": {"percent": 12.5, "per_core": cores},
                    "memory": {"total": 16 << 30, "used": 9 << 30, "percent": 56.2},
                    "load": [1.5, 1.0, 1.0], "disks": [{"mount": "/", "percent": 40.0}]},
    }).encode()


def summary(times):
    times = sorted(times)
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000
    return f"median {pick(0.5):7.2f} ms, p95 {pick(0.95):7.2f} ms, max {times[-1] * 1000:7.2f} ms"


@defer.inlineCallbacks
def timedGet(agent, url):
    began = time.perf_counter()
    response = yield agent.request(b"GET", url.encode())
    body = yield readBody(response)
    return time.perf_counter() - began, response.code, body


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    amqp, exchange = rig.amqp, rig.exchange
    pool = HTTPConnectionPool(reactor)
    agent = Agent(reactor, pool=pool)
    try:
        _, port = yield rig.startListening(
            "bench-api-hosts", "web", f"--max-hosts={arguments.hosts + 1000}", "--history=0")
        base = f"http://127.0.0.1:{port}"
        hosts = [f"node-{i:05d}.rack{i % 40}.dc1.example.com" for i in range(arguments.hosts)]
        for i, host in enumerate(hosts):
            amqp.publish(exchange, f"{hostWord(host)}.analysis", analysis(host))
            if i % 500 == 499:
                yield task.deferLater(reactor, 0, lambda: None)
        deadline = time.monotonic() + 120
        while True:
            _, code, _ = yield timedGet(agent, f"{base}/api/hosts/{hosts[-1]}")
            if code == 200:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the web role did not get every host within 120 s")
            yield task.deferLater(reactor, 0.2, lambda: None)
        rng = random.Random(1)
        byName, byWord, fleet = [], [], []
        for _ in range(arguments.requests):
            host = rng.choice(hosts)
            elapsed, code, _ = yield timedGet(agent, f"{base}/api/hosts/{host}")
            assert code == 200
            byName.append(elapsed)
            elapsed, code, _ = yield timedGet(agent, f"{base}/api/hosts/{hostWord(host)}")
            assert code == 200
            byWord.append(elapsed)
        for _ in range(arguments.fleet_requests):
            elapsed, code, body = yield timedGet(agent, f"{base}/api/hosts")
            assert code == 200
            fleet.append(elapsed)
        count = len(json.loads(body)["hosts"])
        print(f"web role with {count} hosts ({len(body) / 1e6:.1f} MB for /api/hosts), "
              "one HTTP client, keep-alive")
        print(f"  GET /api/hosts/<name>  ({len(byName)} requests)  {summary(byName)}")
        print(f"  GET /api/hosts/<word>  ({len(byWord)} requests)  {summary(byWord)}")
        print(f"  GET /api/hosts         ({len(fleet)} requests)   {summary(fleet)}")
    finally:
        yield pool.closeCachedConnections()


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, hosts=20000, requests=200, fleet_requests=10))
