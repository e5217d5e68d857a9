#!/usr/bin/python3
"""test_durability.py - the daemon's durability flags, end to end.

1. A full disk: semcached runs with a file-size limit (RLIMIT_FSIZE, as a
   full disk answers: writes past it fail) and takes inserts of 8 KiB
   answers until one is refused. That one and every later change come
   back as wire code io_error (HTTP 503 on /v1/insert), lookups go on,
   /metrics says semcache_persist_failed 1; after a restart without the
   limit every acknowledged insert is served and no refused one is.
2. --repair: a byte flipped in the middle of the log stops the start,
   naming the file and the byte; --repair starts anyway, says how many
   records it skipped, and serves every entry but the damaged ones.
3. --compact-bytes: below 1 MiB is refused; 1 MiB makes the daemon compact while it
   takes inserts (snapshots appear, the log shrinks) and a restart
   restores everything.
4. The state directory deleted under a running server: persistence fails
   within a tick (/metrics, the log), changes are refused as io_error,
   lookups go on.
5. A clean stop writes a snapshot: a sliding-TTL entry refreshed past its
   insert's TTL, and its hit count, come back after the restart.
6. A second SIGTERM during that snapshot cancels it: semcached exits 0,
   only log.1 is left, and a restart restores every entry.

usage: test_durability.py --server build/semcached
"""
import glob
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

import semcache  # noqa: E402
from semcache import Client  # noqa: E402
import test_semcache  # noqa: E402
from test_semcache import check, free_port, wait_started  # noqa: E402

DIM = 8
NS = "dur"


def vec_of(i):
    r = random.Random(i)
    return [r.uniform(-1, 1) for _ in range(DIM)]


def response_of(i):
    return (f"answer {i}|" * 800).encode()  # about 8 KiB


STARTED = []  # every Server, so that none outlives a test that raised


class Server:
    def __init__(self, exe, data, extra=(), fsize=None, expect_start=True):
        self.port = free_port()
        self.http_port = free_port()
        args = [exe, "--listen", f"tcp://127.0.0.1:{self.port}",
                "--http", f"127.0.0.1:{self.http_port}",
                "--data-dir", data, "--threads", "2", *extra]
        self.log_path = os.path.join(data, "server.log")
        self.log = open(self.log_path, "ab")

        def limit():
            if fsize is not None:
                # Past the limit a write fails (EFBIG) instead of killing
                # the process: SIGXFSZ ignored survives the exec.
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        self.proc = subprocess.Popen(args, stderr=self.log, preexec_fn=limit)
        STARTED.append(self)
        if expect_start:
            wait_started(self.proc, self.port, self.log_path,
                         http_port=self.http_port)

    def wait_exit(self, timeout=30):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        self.log.close()
        return rc

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        return self.wait_exit()

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metric(self, name):
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        # Generous: a shared machine under load answered late once.
        with urllib.request.urlopen(url, timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return None

    def http_insert(self, i):
        body = json.dumps({"ns": NS, "vec": vec_of(i),
                           "response": response_of(i).decode()}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/v1/insert", data=body,
            headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def served(port, keys):
    """How many of keys are served exactly with their own response."""
    n = 0
    with Client("127.0.0.1", port, timeout=10) as c:
        for i in keys:
            r = c.lookup(NS, vec=vec_of(i), threshold=0.999)
            n += bool(r.get("hit")) and r.get("response") == response_of(i)
    return n


def test_disk_full(exe, root):
    data = os.path.join(root, "full")
    os.makedirs(data)
    # The log fills 192 KiB: about twenty 8 KiB inserts fit.
    srv = Server(exe, data, extra=("--fsync", "always"), fsize=192 << 10)
    acked, refused = [], []
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        for i in range(200):
            try:
                c.insert(NS, response_of(i), vec=vec_of(i))
                acked.append(i)
            except semcache.SemcacheError as e:
                check(e.code == "io_error",
                      f"disk full: insert {i} refused with {e.code}, "
                      "not io_error")
                refused.append(i)
                if len(refused) >= 3:
                    break
        check(len(acked) > 5, f"disk full: only {len(acked)} inserts "
              "acknowledged before the limit")
        check(len(refused) == 3, "disk full: no insert was refused "
              f"({len(acked)} acknowledged)")
        # Once failed, every later change is refused, small ones too.
        try:
            c.insert(NS, b"tiny", vec=vec_of(9999))
            check(False, "disk full: a small insert after the failure was "
                  "acknowledged")
        except semcache.SemcacheError as e:
            check(e.code == "io_error", f"disk full: small insert got {e.code}")
        # Lookups go on.
        r = c.lookup(NS, vec=vec_of(acked[0]), threshold=0.999)
        check(r.get("hit") and r.get("response") == response_of(acked[0]),
              "disk full: an acknowledged entry is not served")
    status, body = srv.http_insert(5000)
    check(status == 503, f"disk full: HTTP insert answered {status}, not 503")
    check(body.get("error", {}).get("code") == "io_error",
          f"disk full: HTTP error body {body}")
    check(srv.metric("semcache_persist_failed") == 1.0,
          "disk full: /metrics does not say semcache_persist_failed 1")
    srv.stop()
    # A restart without the limit serves what was acknowledged, only that.
    srv = Server(exe, data, extra=("--fsync", "always"))
    check(served(srv.port, acked) == len(acked),
          f"disk full: after restart {served(srv.port, acked)} of "
          f"{len(acked)} acknowledged inserts served")
    check(served(srv.port, refused + [5000, 9999]) == 0,
          "disk full: a refused insert is there after the restart")
    with Client("127.0.0.1", srv.port, timeout=5) as c:
        n = c.stats(NS)["entries"]
        check(n == len(acked), f"disk full: {n} entries after restart, "
              f"{len(acked)} acknowledged")
        c.insert(NS, response_of(7000), vec=vec_of(7000))  # writable again
    srv.stop()
    print(f"  disk full: {len(acked)} inserts acknowledged, then io_error "
          "(wire and HTTP 503); all acknowledged restored, none refused")


def test_repair(exe, root):
    data = os.path.join(root, "repair")
    os.makedirs(data)
    srv = Server(exe, data, extra=("--fsync", "always"))
    n = 60
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        for i in range(n):
            c.insert(NS, response_of(i), vec=vec_of(i))
    srv.kill9()  # the log keeps every record (no snapshot at a clean stop)
    logs = sorted(glob.glob(os.path.join(data, "state", "log.*")))
    check(len(logs) == 1, f"repair: log files {logs}")
    if len(logs) != 1:
        return
    size = os.path.getsize(logs[0])
    with open(logs[0], "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x5A]))
    srv = Server(exe, data, expect_start=False)
    rc = srv.wait_exit(timeout=60)
    text = srv.log_text()
    check(rc not in (0, None), f"repair: a corrupt log started (rc {rc})")
    check("corrupt record at byte" in text and "--repair" in text,
          "repair: the refusal does not name the byte and --repair")
    srv = Server(exe, data, extra=("--repair",))
    text = srv.log_text()
    check("--repair skipped" in text, "repair: no skipped-records line")
    got = served(srv.port, range(n))
    check(n - 3 <= got < n, f"repair: {got} of {n} entries served after "
          "--repair (the damaged record's entry must go, the rest stay)")
    srv.stop()
    print(f"  repair: corrupt log refused, --repair served {got} of {n}")

    # The damaged record is the namespace's creation: every entry after it
    # is valid but has no namespace to go to. --repair may drop them, but
    # must say so (docs/PERSISTENCE.md: nothing is dropped silently), not
    # only "skipped 1 corrupt record".
    data = os.path.join(root, "repair-ns")
    os.makedirs(data)
    srv = Server(exe, data, extra=("--fsync", "always"))
    n = 5
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        for i in range(n):
            c.insert(NS, response_of(i), vec=vec_of(i))
    srv.kill9()
    logs = sorted(glob.glob(os.path.join(data, "state", "log.*")))
    with open(logs[0], "r+b") as f:
        # The header (24 bytes from format version 3, 16 before), the
        # first record's frame, its type.
        version = int.from_bytes(f.read(8)[6:8], "little")
        at = (24 if version >= 3 else 16) + 8 + 1
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x5A]))
    srv = Server(exe, data, extra=("--repair",))
    text = srv.log_text()
    m = re.search(r"--repair: (\d+) valid records? did not apply", text)
    check("--repair skipped 1 corrupt record" in text and m is not None and
          int(m.group(1)) >= n,
          f"repair: entries of a skipped namespace dropped without a word "
          f"({text.strip()[-400:]})")
    check("1 corrupt records" not in text,
          "repair: one skipped record is \"1 corrupt record\"")
    srv.stop()


def test_compact(exe, root):
    data = os.path.join(root, "compact")
    os.makedirs(data)
    # Below 1 MiB is refused at start, saying the range.
    bad = Server(exe, data, extra=("--compact-bytes", "65536"),
                 expect_start=False)
    rc = bad.wait_exit(timeout=30)
    check(rc not in (0, None) and "--compact-bytes must be" in bad.log_text(),
          f"compact: --compact-bytes 65536 not refused (rc {rc})")
    srv = Server(exe, data, extra=("--compact-bytes", "1048576"))
    n = 400
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        for i in range(n):
            c.insert(NS, response_of(i), vec=vec_of(i))
    deadline = time.monotonic() + 20
    while "compacted" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    check("compacted" in srv.log_text(),
          "compact: no compaction at --compact-bytes 1048576 after "
          f"{n} inserts of 8 KiB")
    snaps = glob.glob(os.path.join(data, "state", "snap.*"))
    check(len(snaps) >= 1, "compact: no snapshot file")
    srv.kill9()
    srv = Server(exe, data)
    got = served(srv.port, range(n))
    check(got == n, f"compact: {got} of {n} entries after the restart")
    srv.stop()
    print(f"  compact: compacted at 1 MiB, {got} of {n} restored")


def test_dir_deleted(exe, root):
    """The state directory deleted under a running server (fsync
    everysec): within a tick persistence fails, as on a full disk, rather
    than writing on to a file no restart can read."""
    data = os.path.join(root, "gone")
    os.makedirs(data)
    srv = Server(exe, data)
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        c.insert(NS, response_of(1), vec=vec_of(1))
        shutil.rmtree(os.path.join(data, "state"))
        failed = None
        for _ in range(50):
            failed = srv.metric("semcache_persist_failed")
            if failed == 1.0:
                break
            time.sleep(0.1)
        check(failed == 1.0, "state directory deleted: /metrics says "
              f"semcache_persist_failed {failed} after 5 s")
        try:
            c.insert(NS, response_of(2), vec=vec_of(2))
            check(False, "state directory deleted: an insert was "
                  "acknowledged after the failure")
        except semcache.SemcacheError as e:
            check(e.code == "io_error" and "restarts" in e.message,
                  f"state directory deleted: insert refused with {e}")
        r = c.lookup(NS, vec=vec_of(1), threshold=0.999)
        check(r.get("hit") and r.get("response") == response_of(1),
              "state directory deleted: lookups do not go on")
    srv.stop()
    check("the log file was removed" in srv.log_text(),
          "state directory deleted: the server's log does not say so")
    print("  state directory deleted: persistence failed within a tick, "
          "changes refused (io_error), lookups served")


def test_clean_stop(exe, root):
    """What only snapshots keep (hit counts, sliding-TTL refreshes) comes
    back after a clean stop: semcached writes one as it stops. Before, a
    sliding entry looked up every 1.5 s past its 3 s TTL expired at the
    restart ("expired while down": its last logged refresh was its
    insert), and its hit count came back 0."""
    data = os.path.join(root, "clean-stop")
    os.makedirs(data)
    srv = Server(exe, data)
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        c.ns_create("slide", dim=DIM, ttl=3, ttl_mode="sliding")
        c.insert("slide", response_of(1), vec=vec_of(1))
        hits = 0
        for _ in range(3):
            time.sleep(1.5)
            r = c.lookup("slide", vec=vec_of(1), threshold=0.999)
            hits += bool(r.get("hit"))
    check(hits == 3, f"clean stop: {hits} of 3 sliding lookups hit")
    rc = srv.stop()
    check(rc == 0, f"clean stop: semcached exited {rc}")
    check("snapshot written at stop" in srv.log_text(),
          "clean stop: the log says a snapshot was written at stop")
    srv = Server(exe, data)
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        r = c.lookup("slide", vec=vec_of(1), threshold=0.999)
    check(bool(r.get("hit")) and r.get("response") == response_of(1),
          "clean stop: the sliding entry refreshed 4.5 s past its insert "
          "is served after the restart")
    check(r.get("hit_count", 0) >= 3,
          f"clean stop: its hit count came back ({r.get('hit_count')})")
    srv.stop()
    # --snapshot-at-stop off: the fast stop, no snapshot (the log has all).
    quick = os.path.join(root, "clean-stop-off")
    os.makedirs(quick)
    srv = Server(exe, quick, extra=("--snapshot-at-stop", "off"))
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        c.ns_create("slide", dim=DIM)
        c.insert("slide", response_of(1), vec=vec_of(1))
    check(srv.stop() == 0, "clean stop, off: semcached exited 0")
    snaps = glob.glob(os.path.join(quick, "state", "snap.*"))
    check(not snaps and "snapshot written at stop" not in srv.log_text(),
          f"clean stop, off: no snapshot written ({snaps})")
    srv = Server(exe, quick)
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        r2 = c.lookup("slide", vec=vec_of(1), threshold=0.999)
    check(bool(r2.get("hit")), "clean stop, off: the entry comes back from "
                               "the log")
    srv.stop()
    print(f"  clean stop: sliding entry served {bool(r.get('hit'))}, hit "
          f"count {r.get('hit_count')}")


def wait_log(srv, text, timeout=30):
    deadline = time.monotonic() + timeout
    while text not in srv.log_text():
        if time.monotonic() > deadline or srv.proc.poll() is not None:
            return False
        time.sleep(0.02)
    return True


def wait_fifo_open(pid, timeout=30):
    """Whether a thread of pid is blocked opening a FIFO (waiting for its
    reader) within timeout: wchan wait_for_partner, or, where the kernel
    hides wchan, the openat system call (257 on x86-64) in progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                with open(os.path.join(task, "wchan")) as f:
                    wchan = f.read().strip()
                with open(os.path.join(task, "syscall")) as f:
                    call = f.read().split(" ", 1)[0]
            except OSError:
                continue
            if wchan in ("wait_for_partner", "fifo_open") or call == "257":
                return True
        time.sleep(0.01)
    return False


def test_stop_cancelled(exe, root):
    """A second SIGTERM during the stop's snapshot (a million entries take
    seconds) cuts it short: semcached exits at once, the log keeps every
    change, and no log generation is left behind. The snapshot is held
    still, not timed: its file is a FIFO, so its open waits for a reader,
    which the test opens only once the second signal was taken (sent
    once the open waits)."""
    data = os.path.join(root, "stop-cancelled")
    os.makedirs(data)
    srv = Server(exe, data)
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        c.ns_create(NS, dim=DIM)
        for i in range(3):
            c.insert(NS, response_of(i), vec=vec_of(i))
    state = os.path.join(data, "state")
    fifo = os.path.join(state, "snap.2.tmp")
    os.mkfifo(fifo)
    srv.proc.send_signal(signal.SIGTERM)
    check(wait_log(srv, "writing a snapshot at stop"),
          "stop cancelled: the log says the stop's snapshot began")
    # The second signal only once the snapshot waits in the FIFO's open:
    # sent before, it cancels the compaction before its file is opened,
    # and the FIFO the test made is left (the server made no file).
    check(wait_fifo_open(srv.proc.pid),
          "stop cancelled: the snapshot waits to open its file")
    srv.proc.send_signal(signal.SIGTERM)
    check(wait_log(srv, "received again"),
          "stop cancelled: the second SIGTERM is taken")
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + 30
    try:
        while srv.proc.poll() is None and time.monotonic() < deadline:
            try:
                if not os.read(fd, 1 << 16):
                    time.sleep(0.01)
            except BlockingIOError:
                time.sleep(0.01)
    finally:
        os.close(fd)
    rc = srv.wait_exit()
    check(rc == 0, f"stop cancelled: semcached exited {rc}")
    check("snapshot at stop cancelled" in srv.log_text(),
          "stop cancelled: the log says the snapshot was cancelled")
    left = sorted(os.path.basename(f)
                  for f in glob.glob(os.path.join(state, "*.*")))
    check(left == ["log.1"], f"stop cancelled: only log.1 is left ({left})")
    srv = Server(exe, data)
    with Client("127.0.0.1", srv.port, timeout=10) as c:
        served = sum(c.lookup(NS, vec=vec_of(i), threshold=0.999)
                     .get("response") == response_of(i) for i in range(3))
    check(served == 3, f"stop cancelled: {served} of 3 entries restored")
    srv.stop()
    print(f"  stop cancelled: exit {rc}, files left {left}, {served} of 3 "
          f"entries restored")


def main():
    exe = sys.argv[sys.argv.index("--server") + 1]
    root = tempfile.mkdtemp(prefix="semcache-durability-")
    try:
        test_disk_full(exe, root)
        test_repair(exe, root)
        test_compact(exe, root)
        test_dir_deleted(exe, root)
        test_clean_stop(exe, root)
        test_stop_cancelled(exe, root)
    except Exception as e:  # a failure, said, and its data kept
        check(False, f"raised {type(e).__name__}: {e}")
    finally:
        for srv in STARTED:
            if srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
        if test_semcache.failed == 0:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"  data kept in {root}")
    passed, failed = test_semcache.passed, test_semcache.failed
    print(f"test_durability: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
