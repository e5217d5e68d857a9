#!/usr/bin/python3
"""test_ports.py

The Python tests' ports (clients/python/testports.py): free_port() as the
tests import it hands out ports of SEMCACHE_TEST_PORTS (by default 20000
up to the kernel's ephemeral range), below the ephemeral range; a port of
a held slot that something listens on is skipped; processes at once never
hand out the same port: one started at the slot another holds (its ports
handed out, none bound yet) moves on to a slot of its own, and one whose
range is only slots others hold fails, saying so; a process takes 8 slots
at the most, then hands out its own ports again, not the last it handed
out (31 of 32 listened on: the free one once, then refused, Python and
C); a bad range is refused.
With --cports PATH (the holder test_cports, of tests/test_ports.h), the
C tests' ports by the same rules: of the range, below the ephemeral one,
never a port or slot that a Python or another C process holds.
tests/fake_upstream.py run alone with no port, and with --bench PATH
bench_service's listeners (--proxy, --transport tcp), take theirs the
same way (not the kernel's, a bind to port 0).
Prints "N passed, N failed" last; exits 1 on a failure."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

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


def cholder(cports, start, n, slot=False, env=None, busy=False):
    """A C holder (test_cports: sc_test_port() n times, or with slot one
    whole slot by sc_test_ports_slot()) from slot index start on ("pid":
    the tests' pick) and its first line. env: its SEMCACHE_TEST_PORTS."""
    e = dict(os.environ)
    if env is not None:
        e["SEMCACHE_TEST_PORTS"] = env
    proc = subprocess.Popen(
        [cports] + (["--slot"] if slot else []) +
        (["--busy"] if busy else []) + [str(start), str(n)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=e)
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


def chain(lo, held, steps):
    """steps: (what, n, start) each, start(k) a holder started at slot
    index k asking for n ports: the first started at the slot of held
    (this process's ports), each next at the slot of the one before, all
    held at once. Each must get its n ports, none of them held by this
    process or a holder before it. Returns the ports all took."""
    taken, procs = set(held), []
    k = (min(held) - lo) // testports.SLOT
    for what, n, start in steps:
        proc, line = start(k)
        procs.append(proc)
        got = ports_of(line)
        check(len(got) == n and not taken & set(got),
              f"{what} started at slot {k} got {n} ports of its own: "
              f"{line} (held before: {sorted(taken)})")
        if not got:
            break
        taken |= set(got)
        k = (got[0] - lo) // testports.SLOT
    for proc in reversed(procs):
        release(proc)
    return taken - set(held)


def check_cap(held, lo, n, what):
    """held: a holder that asked for n ports, more than SLOTS_MAX slots
    hold, and its line: it took SLOTS_MAX slots at the most."""
    proc, line = held
    got = ports_of(line)
    slots = {(p - lo) // testports.SLOT for p in got}
    check(len(got) == n and len(slots) <= testports.SLOTS_MAX and
          len(set(got)) <= testports.SLOTS_MAX * testports.SLOT,
          f"{n} ports asked {what}: {len(set(got))} ports of {len(slots)} "
          f"slots ({line[:80]})")
    release(proc)


def test_reuse_guard(lo, hi):
    """Past SLOTS_MAX slots, a port is not handed out again while it is
    one of the last SLOT handed out (it was, twice in a row, when the
    rest were busy): 32 ports taken, 31 listened on, the one free handed
    out once, then refused, saying why."""
    own = testports.Ports(lo, hi, 0)
    n = testports.SLOTS_MAX * testports.SLOT
    socks = []
    try:
        got = [own.take() for _ in range(n)]
        for p in got[1:]:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
                s.listen(1)
                socks.append(s)
            except OSError:
                s.close()  # busy all the same
        again = own.take()
        check(again == got[0],
              f"past {n} ports, the one free is handed out again: {again} "
              f"({got[0]})")
        try:
            twice = own.take()
            check(False, f"and not a second time while unbound: {twice}")
        except testports.PortsError as e:
            check("last" in str(e), f"and then refused: {e}")
    except testports.PortsError as e:
        check(False, f"{n} ports of {lo}-{hi}: {e}")
    finally:
        for s in socks:
            s.close()
        own.close()


def test_c(cports, lo, hi, eph, first, slot):
    """The C tests' ports (test_ports.h) beside this process's slot."""
    held = set(range(first, first + 4))
    # The tests' own pick: ports of the range, below the ephemeral one.
    c, line = cholder(cports, "pid", 6)
    pc = ports_of(line)
    check(len(pc) == 6 and len(set(pc)) == 6 and
          all(lo <= p <= hi and p < eph for p in pc),
          f"the C helper gave {line}, of {lo}-{hi} below {eph}")
    check(not held & set(pc),
          f"the C helper's ports ({pc}) are none of this process's slot's")
    release(c)

    # C started at this process's slot takes another; Python started at
    # C's slot another again; a C whole slot started there a third.
    chain(lo, held, [
        ("a C holder", 4, lambda k: cholder(cports, k, 4)),
        ("a Python holder", 4, lambda k: holder(lo, hi, k, 4)),
        ("a C whole slot", 4, lambda k: cholder(cports, k, 4, slot=True))])

    # 40 ports asked of C: 8 slots at the most, its own handed out again.
    n = testports.SLOTS_MAX * testports.SLOT + 8
    check_cap(cholder(cports, slot, n), lo, n, "of C")

    # 32 ports, 31 listened on: the one free handed out once, not twice.
    n = testports.SLOTS_MAX * testports.SLOT
    c, line = cholder(cports, 0, n, busy=True)
    w = line.split()
    check(len(w) == n + 2 and w[-2] == w[0] and w[-1] == "error",
          f"C past {n} ports: the one free again once, then refused: "
          f"{' '.join(w[-3:])} ({w[:1]})")
    release(c)

    # Only this process's slot, or a bad range: no port, said so.
    for env in [f"{first}-{first + 3}", "abc", "25200-25202"]:
        c, line = cholder(cports, 0, 1, env=env)
        check(line.startswith("error:"),
              f"C with SEMCACHE_TEST_PORTS={env}: {line}")
        release(c)
        c, line = cholder(cports, 0, 1, slot=True, env=env)
        check(line.startswith("error:"),
              f"C, a whole slot, with SEMCACHE_TEST_PORTS={env}: {line}")
        release(c)


def run_env(argv, env, timeout=30):
    """argv run with SEMCACHE_TEST_PORTS=env: (status, stderr); status
    None when it ran past timeout seconds (then killed)."""
    e = dict(os.environ, SEMCACHE_TEST_PORTS=env)
    try:
        r = subprocess.run(argv, env=e, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
        return r.returncode, r.stderr
    except subprocess.TimeoutExpired as x:
        return None, x.stderr or ""


def test_fake_upstream(lo, hi, eph, first):
    """tests/fake_upstream.py run alone with no port takes one as the
    tests do (it used to bind port 0: the kernel's, in its ephemeral
    range), and with only a held slot in its range says so."""
    fake = os.path.join(HERE, "fake_upstream.py")
    e = dict(os.environ, SEMCACHE_TEST_PORTS=f"{lo}-{hi}")
    proc = subprocess.Popen([sys.executable, fake], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    proc.terminate()
    proc.communicate(timeout=30)
    port = int(line.rsplit(":", 1)[1]) if line.count(":") == 2 else -1
    check(lo <= port <= hi and port < eph and
          not first <= port <= first + 3,
          f"fake_upstream.py alone serves on a port of {lo}-{hi} below "
          f"{eph}, none of this process's slot: {line}")
    rc, err = run_env([sys.executable, fake], f"{first}-{first + 3}")
    check(rc not in (0, None) and "locked by other runs" in err,
          f"fake_upstream.py with only a held slot refused: {rc} "
          f"{err.strip()[-120:]}")


def bench_args(bench, what, env):
    """bench_service (--proxy, or --transport tcp) with SEMCACHE_TEST_PORTS
    env and a fake semcached that writes its arguments to a file: the
    ports it was given, each N of :N in them (--proxy: the listener's, the
    HTTP front's and the fake upstream's; tcp: the listener's), its status
    (None: stopped, with its children, once the file was written) and its
    stderr."""
    tmp = tempfile.mkdtemp(prefix="semcache-ports-")
    args = os.path.join(tmp, "args")
    try:
        srv = os.path.join(tmp, "server")
        with open(srv, "w") as f:
            f.write(f'#!/bin/sh\necho "$@" >"{args}.new"\n'
                    f'mv "{args}.new" "{args}"\n')
        os.chmod(srv, 0o755)
        argv = [bench, "--server", srv] + (
            ["--proxy", "--table", os.path.join(tmp, "none")]
            if what == "proxy" else ["--transport", "tcp"])
        # A session of its own: its children (the fake upstream, the echo
        # server) stop with it.
        # TMPDIR: its data directory (tests/test_tmp.h), left by the
        # SIGTERM, goes with tmp.
        proc = subprocess.Popen(argv, env=dict(os.environ, TMPDIR=tmp,
                                               SEMCACHE_TEST_PORTS=env),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + 30
        while (proc.poll() is None and not os.path.exists(args) and
               time.monotonic() < deadline):
            time.sleep(0.05)
        rc = proc.poll()
        if rc is None:
            os.killpg(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
        try:
            with open(args) as f:
                line = f.read()
        except OSError:
            line = ""
        return rc, err, [int(n) for n in re.findall(r":(\d+)", line)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_bench(bench, lo, hi, eph, first):
    """bench_service's listeners (--proxy: the fake upstream, the HTTP
    front, the nng listener; --transport tcp: semcached's) take the
    tests' ports (they bound port 0, or 20000 + 2 * pid % 20000, up to
    59998), and refuse a range of only held slots."""
    for what in ["proxy", "tcp"]:
        rc, err, ports = bench_args(bench, what, f"{lo}-{hi}")
        want = 3 if what == "proxy" else 1
        check(rc is None and len(ports) == want and
              len(set(ports)) == want and
              all(lo <= p <= hi and p < eph and not first <= p <= first + 3
                  for p in ports),
              f"bench_service ({what}) gave semcached ports of {lo}-{hi} "
              f"below {eph}, none of this process's slot: {ports} "
              f"({err.strip()[-120:]})")
        rc, err, ports = bench_args(bench, what, f"{first}-{first + 3}")
        check(rc not in (0, None) and not ports and
              "locked by other runs" in err,
              f"bench_service ({what}) with only a held slot refused: "
              f"{rc} {ports} {err.strip()[-120:]}")


CPORTS = None
BENCH = None


def main():
    global CPORTS, BENCH
    argv = sys.argv[1:]
    if "--cports" in argv:
        CPORTS = argv[argv.index("--cports") + 1]
    if "--bench" in argv:
        BENCH = argv[argv.index("--bench") + 1]
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
    held = set(range(first, first + 4))
    got = chain(lo, held, [
        ("holder A", 4, lambda k: holder(lo, hi, k, 4)),
        ("holder B", 8, lambda k: holder(lo, hi, k, 8))])
    check(all(lo <= p <= hi and p < eph for p in got),
          f"the holders' ports lie in {lo}-{hi}, below {eph}")

    # A process asking for more ports than SLOTS_MAX slots hold takes no
    # more slots: it hands out its own again.
    n = testports.SLOTS_MAX * testports.SLOT + 8
    check_cap(holder(lo, hi, slot, n), lo, n, "of Python")
    test_reuse_guard(lo, hi)

    # A range that is only a slot this process holds: no port, said so.
    c, line_c = holder(first, first + 3, 0, 1)
    check(line_c.startswith("error:") and "locked by other runs" in line_c,
          f"a range of held slots only is refused: {line_c}")
    release(c)
    if CPORTS:
        test_c(CPORTS, lo, hi, eph, first, slot)
    test_fake_upstream(lo, hi, eph, first)
    if BENCH:
        test_bench(BENCH, lo, hi, eph, first)
    if lst is not None:
        lst.close()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
