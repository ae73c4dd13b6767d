"""
Whether a failed login says if the user exists: the time of a wrong password
for a user who exists, for one who does not, and of a right password, against
one real `twistd resmon --users` (each attempt from its own loopback address,
and a new unknown name each time, so that the login throttle does not slow them).

Usage: python bench/login_timing.py [--attempts N]
Needs resmon installed (the twistd and resmon-users on this interpreter's PATH).
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task, threads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import TwistdProcess, freePort  # noqa: E402

USERS = os.path.join(os.path.dirname(sys.executable), "resmon-users")


def login(port, address, name, password):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(address, 0))
    started = time.perf_counter()
    try:
        connection.request("POST", "/login", json.dumps({"name": name, "password": password}),
                           {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


@defer.inlineCallbacks
def main(reactor, attempts):
    directory = tempfile.mkdtemp(prefix="resmon-bench-login-")
    path = os.path.join(directory, "users.toml")
    subprocess.run([USERS, path, "add", "alice"], input="alice-password\nalice-password\n",
                   text=True, check=True, capture_output=True)
    port = freePort()
    web = TwistdProcess("bench-login", [f"--port={port}", "--interface=127.0.0.1",
                                        f"--users={path}"]).start()
    try:
        yield web.waitForOutput(b"dashboard listening", timeout=30)
        cases = {"wrong password, user exists": ("alice", "not-the-password", 401),
                 "wrong password, no such user": ("nobody", "not-the-password", 401),
                 "right password": ("alice", "alice-password", 200)}
        times = {case: [] for case in cases}
        for attempt in range(attempts):
            for number, (case, (name, password, expected)) in enumerate(cases.items()):
                address = f"127.0.{attempt % 250 + 1}.{number + 1}"
                name = name.replace("nobody", f"nobody{attempt}")  # a name's failures add up
                status, seconds = yield threads.deferToThread(login, port, address, name, password)
                assert status == expected, (case, status)
                times[case].append(seconds)
        print(f"{attempts} attempts each; the first of each case is left out (warm-up)")
        print("case                              median      p90")
        for case, seconds in times.items():
            seconds = sorted(seconds[1:])
            print(f"{case:32s} {statistics.median(seconds) * 1000:7.1f} ms "
                  f"{seconds[int(len(seconds) * 0.9) - 1] * 1000:7.1f} ms")
    finally:
        yield web.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--attempts", type=int, default=12)
    task.react(main, (parser.parse_args().attempts,))
