#!/usr/bin/python3
"""test_startstop.py - semcached's start and stop through the real daemon:
the stop line counts a reply the client read just before SIGTERM
("served 1 request", once "served 0" now and then).

usage: test_startstop.py --server build/semcached [--starts N]
                         [--ports LO-HI]
(--ports: take the ports from LO..HI in turn, not free ones the kernel
picks, for runs beside other servers.)
"""
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

import semcache  # noqa: E402
from semcache import Client  # noqa: E402
from test_semcache import check, free_port  # noqa: E402
import test_semcache  # noqa: E402


PORTS = None  # an iterator over --ports, or None: free_port()


def next_port():
    return next(PORTS) if PORTS is not None else free_port()


class Daemon:
    """A semcached on free ports of 127.0.0.1 (nng and HTTP), its data in
    tmp/name and its log in tmp/name.log; stop() sends SIGTERM and returns
    the log."""

    def __init__(self, server, tmp, name, *extra):
        self.port, self.hport = next_port(), next_port()
        self.log = os.path.join(tmp, name + ".log")
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(
                [server, "--listen", f"tcp://127.0.0.1:{self.port}",
                 "--http", f"127.0.0.1:{self.hport}",
                 "--data-dir", os.path.join(tmp, name), "--persist", "off",
                 *extra], stderr=f)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with open(self.log, errors="replace") as f:
            return f.read()


def until(daemon, probe, timeout=60):
    """Calls probe() until it returns True, as a client waiting for the
    server would (1 ms apart); False if the daemon exits or the timeout
    passes first."""
    deadline = time.monotonic() + timeout
    while daemon.alive() and time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.001)
    return False


def ready_logged(daemon):
    with open(daemon.log, errors="replace") as f:
        return "semcached: ready (" in f.read()


def test_stop_counts_last_reply(server, tmp, starts):
    """One ping, its reply read, SIGTERM at once: the stop line says
    "served 1 request" (once "served 0" now and then: the count came
    after the send)."""
    lines = []
    for i in range(starts):
        d = Daemon(server, tmp, f"stop-{i}")
        try:
            ok = until(d, lambda: ready_logged(d))
            with Client("127.0.0.1", d.port, timeout=5) as c:
                c.ping()
        except (OSError, semcache.ProtocolError):
            ok = False
        finally:
            log = d.stop()
        m = re.search(r"semcached: served (\d+ requests?)", log)
        lines.append(m.group(1) if ok and m else "no line")
    bad = [x for x in lines if x != "1 request"]
    check(not bad, f"the stop line counts the reply read before SIGTERM: "
          f"{len(bad)} of {starts} not: {bad[:5]}")


def main():
    global PORTS
    argv = sys.argv[1:]
    if "--ports" in argv:
        lo, hi = map(int, argv[argv.index("--ports") + 1].split("-"))
        PORTS = itertools.cycle(range(lo, hi + 1))
    server = argv[argv.index("--server") + 1]
    starts = int(argv[argv.index("--starts") + 1]) if "--starts" in argv \
        else 20
    with tempfile.TemporaryDirectory() as tmp:
        test_stop_counts_last_reply(server, tmp, starts)
    print(f"startstop: {test_semcache.passed} passed, "
          f"{test_semcache.failed} failed")
    return 1 if test_semcache.failed else 0


if __name__ == "__main__":
    sys.exit(main())
