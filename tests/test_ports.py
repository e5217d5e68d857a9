#!/usr/bin/python3
"""test_ports.py

The Python tests' ports (clients/python/testports.py): free_port() as the
tests import it hands out ports of SEMCACHE_TEST_PORTS (by default 20000
up to the kernel's ephemeral range), below the ephemeral range; a port of
a held slot that something listens on is skipped; processes at once never
hand out the same port: one started at the slot another holds (its ports
handed out, none bound yet) moves on to a slot of its own, and one whose
range is only slots others hold fails, saying so; a process takes 8 slots
at the most, then hands out its own ports again; a bad range is refused.
Prints "N passed, N failed" last; exits 1 on a failure."""
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.join(HERE, "..", "clients", "python")
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, PYDIR)
import test_semcache  # noqa: E402
import testports  # noqa: E402
from test_semcache import check, free_port  # noqa: E402


# A holder: takes n ports of lo-hi from slot index start on, prints them
# on one line (or "error: ..."), and holds them until its stdin closes.
HOLDER = """
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import testports
lo, hi, start, n = map(int, sys.argv[2:6])
p = testports.Ports(lo, hi, start)
try:
    got = [p.take() for _ in range(n)]
    print(" ".join(map(str, got)), flush=True)
except testports.PortsError as e:
    print("error:", e, flush=True)
sys.stdin.read()
"""


def holder(lo, hi, start, n):
    """A holder process and its first line (its ports, or its error)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, PYDIR, str(lo), str(hi), str(start),
         str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def release(proc):
    proc.stdin.close()
    proc.wait(30)


def ports_of(line):
    try:
        return [int(w) for w in line.split()]
    except ValueError:
        return []


def summary():
    p, f = test_semcache.passed, test_semcache.failed
    print(f"ports: {p} passed, {f} failed")
    return 1 if f or not p else 0


def test_bad_ranges():
    eph = testports.ephemeral_low()
    bad = ["abc", "25200-25202", "25200-25299x", "1000-1100", "25299-25200",
           "-25200"]
    if eph + 10 <= 65535:
        bad.append(f"{eph}-{eph + 10}")
    for env in bad:
        try:
            testports.test_range(env)
            check(False, f"SEMCACHE_TEST_PORTS={env} refused")
        except testports.PortsError as e:
            check("SEMCACHE_TEST_PORTS" in str(e), f"{env}: {e}")
    if eph > 25299:
        check(testports.test_range("25200-25299") == (25200, 25299),
              "SEMCACHE_TEST_PORTS=25200-25299 taken")


def main():
    test_bad_ranges()
    lo, hi = testports.test_range()
    eph = testports.ephemeral_low()
    mine = free_port()
    check(lo <= mine <= hi and mine < eph,
          f"free_port() gave {mine}, of {lo}-{hi} below {eph}")
    own = testports._ports
    check(own is not None and mine in own.given,
          "free_port() is the helper's")
    if own is None or not own.locks:
        return summary()
    first = own.locks[0][0]
    slot = (first - lo) // testports.SLOT
    print(f"ports: this process holds {first}-{first + 3} (of {lo}-{hi})",
          file=sys.stderr)

    # A port of the held slot that something listens on is skipped.
    lst = None
    if own.fresh:
        busy = own.fresh[0]
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", busy))
        lst.listen(1)
        nxt = free_port()
        check(nxt != busy and nxt != mine and lo <= nxt <= hi,
              f"a port listened on ({busy}) is skipped: got {nxt}")

    # Holder A starts at this process's slot: it must take another. Its
    # ports are handed out but none bound when B starts at A's slot.
    a, line_a = holder(lo, hi, slot, 4)
    pa = ports_of(line_a)
    check(len(pa) == 4, f"holder A got 4 ports: {line_a}")
    held = set(range(first, first + 4))
    check(not held & set(pa),
          f"holder A ({pa}) got none of this process's slot's ({first}-"
          f"{first + 3})")
    if pa:
        slot_a = (pa[0] - lo) // testports.SLOT
        b, line_b = holder(lo, hi, slot_a, 8)
        pb = ports_of(line_b)
        check(len(pb) == 8, f"holder B got 8 ports: {line_b}")
        check(not set(pa) & set(pb) and not held & set(pb),
              f"holder B ({pb}) got none of A's ({pa}) nor this "
              f"process's ({first}-{first + 3})")
        check(all(lo <= p <= hi and p < eph for p in pa + pb),
              f"the holders' ports lie in {lo}-{hi}, below {eph}")
        release(b)
    release(a)

    # A process asking for more ports than SLOTS_MAX slots hold takes no
    # more slots: it hands out its own again.
    n = testports.SLOTS_MAX * testports.SLOT + 8
    d, line_d = holder(lo, hi, slot, n)
    pd = ports_of(line_d)
    slots_d = {(p - lo) // testports.SLOT for p in pd}
    check(len(pd) == n and len(slots_d) <= testports.SLOTS_MAX and
          len(set(pd)) <= testports.SLOTS_MAX * testports.SLOT,
          f"{n} ports asked: {len(set(pd))} ports of {len(slots_d)} slots "
          f"({line_d[:80]})")
    release(d)

    # A range that is only a slot this process holds: no port, said so.
    c, line_c = holder(first, first + 3, 0, 1)
    check(line_c.startswith("error:") and "locked by other runs" in line_c,
          f"a range of held slots only is refused: {line_c}")
    release(c)
    if lst is not None:
        lst.close()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
