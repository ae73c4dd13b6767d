"""
What finding an event's hooks costs the webhooks role, in process: the
real WebhookDispatcher with a registry of --hooks hooks on --keys distinct
keys (a few wildcards, the rest one host's measures each), fed routing keys
of --hosts hosts; against the scan of every hook an event used to make.

Usage: python bench/webhook_matching.py [--hooks 1000] [--keys 200] [--hosts 1000] [--events 20000]
Prints microseconds per event: every hook scanned, the dispatcher's
remembered matches, and a routing key seen for the first time.
"""

import argparse
import random
import time

from twisted.internet.task import Clock

from resmon import topics
from resmon.webhooks import store as storage
from resmon.webhooks.delivery import WebhookDispatcher

WILDCARDS = ["#", "*.alert", "*.analysis", "web-01.#", "deploys.event"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hooks", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    arguments = parser.parse_args()

    rng = random.Random(1)
    keys = WILDCARDS + [f"h{n}.measure" for n in range(arguments.keys - len(WILDCARDS))]
    hooks = [storage.Hook(f"hook{n}", rng.choice(keys), "http://127.0.0.1:1/", "s", 1.0,
                          storage.ACTIVE) for n in range(arguments.hooks)]
    dispatcher = WebhookDispatcher(None, None, Clock(), lambda k, b: None, 3600, 3600, 100)
    dispatcher.wakeAll = lambda: None
    dispatcher.setHooks(hooks)
    routingKeys = [f"h{n % arguments.hosts}.{kind}" for n, kind in zip(
        range(arguments.events), ["analysis", "measure", "status", "alert"] * arguments.events)]

    started = time.perf_counter()
    for routingKey in routingKeys:
        [hook for hook in hooks
         if hook.state != storage.DISABLED and topics.topicMatches(hook.key, routingKey)]
    scanned = (time.perf_counter() - started) / len(routingKeys)

    started = time.perf_counter()
    found = 0
    for routingKey in routingKeys:
        for hookId in dispatcher._matchingHooks(routingKey):
            if dispatcher.hooks[hookId].state != storage.DISABLED:
                found += 1
    remembered = (time.perf_counter() - started) / len(routingKeys)

    started = time.perf_counter()
    for routingKey in routingKeys[:2000]:
        dispatcher._matching.clear()
        dispatcher._matchingHooks(routingKey)
    first = (time.perf_counter() - started) / min(2000, len(routingKeys))

    print(f"{arguments.hooks} hooks on {arguments.keys} keys, {arguments.events} events of "
          f"{arguments.hosts} hosts ({found / len(routingKeys):.1f} hooks matched per event)")
    print(f"  every hook scanned (before):        {scanned * 1e6:8.1f} µs per event")
    print(f"  matches remembered by routing key:  {remembered * 1e6:8.1f} µs per event")
    print(f"  a routing key seen the first time:  {first * 1e6:8.1f} µs per event")


if __name__ == "__main__":
    main()
