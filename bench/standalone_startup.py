"""
Start-up of the single-machine mode: how long one real `twistd resmon`
(standalone, no broker) takes from twistd's first log line to the dashboard
listening, and to the first analysis of this machine reaching a WebSocket
client (the README promises it within about two seconds).

Usage: python bench/standalone_startup.py [--runs N]
Needs resmon installed (the twistd on this interpreter's PATH).
"""

import argparse
import os
import sys
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import TwistdProcess, connectWebSocket, freePort  # noqa: E402


def analysisOf(host):
    def predicate(message):
        events = message["events"] if message.get("kind") == "snapshot" else [message]
        return any(e.get("host") == host and e.get("kind") == "analysis" for e in events)
    return predicate


@defer.inlineCallbacks
def main(reactor, runs):
    print("run   interpreter+imports   start -> listening   start -> first analysis on the WebSocket")
    for run in range(runs):
        port = freePort()
        spawned = time.monotonic()
        standalone = TwistdProcess("bench-standalone", [
            f"--port={port}", "--interface=127.0.0.1", "--name=bench-solo"]).start()
        try:
            yield standalone.waitForOutput(b"starting up", timeout=30)
            started = time.monotonic()
            yield standalone.waitForOutput(b"dashboard listening", timeout=30)
            listening = time.monotonic()
            client, _ = yield connectWebSocket(port)
            yield client.waitFor(analysisOf("bench-solo"), 30, "an analysis of this machine")
            analysed = time.monotonic()
        finally:
            yield standalone.stop()
        print(f"{run + 1:3d}   {started - spawned:17.2f} s   {listening - started:16.2f} s   "
              f"{analysed - started:16.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=3)
    task.react(main, (parser.parse_args().runs,))
