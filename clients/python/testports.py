"""The tests' TCP ports: free ones of SEMCACHE_TEST_PORTS=LO-HI, as the
C tests take theirs (tests/test_ports.h, the same rules; by default
20000 up to the kernel's ephemeral range, net.ipv4.ip_local_port_range).

The kernel's free ports (a bind to port 0) lie in the ephemeral range,
where a port handed out and released can be taken by any outgoing
connection before the server is started on it, and no run can be held to
a range of its own. Here the range is cut into slots of 4 ports, aligned
on LO as test_dispatch's are; a process takes a slot only when it can
lock the slot's file (/tmp/semcache-test-ports.FIRST.lock, the file
the C tests lock, held until the process exits), so that two test
processes at once, Python or C, never hand out the same port. Slots are
tried from one picked by the pid. A port is handed out when a listener
could bind it now (SO_REUSEADDR, as nng's and the fake upstream's
listeners set it); nothing binds it but the test, so a port handed out
and left unbound is one where nothing listens. A process takes up to
SLOTS_MAX slots (32 ports; test_startstop asks for some 94 in turn),
then hands out its ports again, oldest first, those that bind now, so
that a run of a range of 100 ports leaves slots to the tests beside;
none of the last SLOT it handed out, which the test may not have bound
yet (with only those free, one of them, but never the last one again:
with that one only, it raises, saying so). So a test that leaves ports
unbound while it takes more may be handed one again as soon as two
takes later: of 25300-25303, all 4 taken and the last 2 listened on,
the next 3 takes give 25300, 25301, 25300."""
import collections
import fcntl
import os
import socket

LOCK_DIR = "/tmp"
SLOT = 4
SLOTS_MAX = 8  # a process's slots at the most: the rest is for other runs


class PortsError(RuntimeError):
    pass


def ephemeral_low():
    """The first port of the kernel's ephemeral range as it is set
    (32768 only when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
        return lo if lo > 0 else 32768
    except (OSError, ValueError, IndexError):
        return 32768


def test_range(env=None):
    """(lo, hi) of SEMCACHE_TEST_PORTS (env: its value, read from the
    environment when None), by default 20000 (1024 when the ephemeral
    range starts at 24000 or below) up to the ephemeral range. Raises
    PortsError when it is malformed, under 4 ports or reaches the
    ephemeral range."""
    eph = ephemeral_low()
    lo, hi = (20000 if eph > 24000 else 1024), eph - 1
    if env is None:
        env = os.environ.get("SEMCACHE_TEST_PORTS", "")
    if env:
        parts = env.split("-")
        try:
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError
            lo, hi = int(parts[0]), int(parts[1])
            if lo < 1024 or hi < lo + SLOT - 1 or hi > 65535:
                raise ValueError
        except ValueError:
            raise PortsError(f"SEMCACHE_TEST_PORTS={env}: want LO-HI, 4 "
                             f"ports or more of 1024-65535") from None
        if hi >= eph:
            raise PortsError(f"SEMCACHE_TEST_PORTS={env} reaches the "
                             f"kernel's ephemeral ports ({eph} up): the "
                             f"tests' ports must lie below them")
    if hi < lo + SLOT - 1:
        raise PortsError(f"no 4 ports below the ephemeral ones ({eph})")
    return lo, hi


def port_free(port):
    """Whether a listener could bind 127.0.0.1:port now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Ports:
    """One process's ports: the slots it has locked (their files open
    until it exits or close() is called) and the ports it handed out."""

    def __init__(self, lo, hi, start=None):
        self.lo, self.hi = lo, hi
        self.nslots = (hi - lo + 1) // SLOT
        self.start = (os.getpid() if start is None else start) % self.nslots
        self.tried = 0  # slots tried so far, from start on
        self.locks = []  # (first port, open lock file)
        self.fresh = []  # ports of held slots not handed out yet
        self.given = []  # handed out, oldest first
        self.reuse = 0  # where take() looks next among given
        self.last = collections.deque(maxlen=SLOT)  # the last handed out

    def _lock_slot(self):
        """Locks the next slot that no one else holds; False when none
        is left or this process holds SLOTS_MAX."""
        while self.tried < self.nslots and len(self.locks) < SLOTS_MAX:
            first = self.lo + (self.start + self.tried) % self.nslots * SLOT
            self.tried += 1
            path = os.path.join(LOCK_DIR, f"semcache-test-ports.{first}.lock")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o666)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # another process's slot
                continue
            self.locks.append((first, fd))
            self.fresh.extend(range(first, first + SLOT))
            return True
        return False

    def take(self):
        """A port of a slot this process holds, free now and never handed
        out before while it can lock another slot; past that, one handed
        out before that is free again, oldest first, but none of the
        last SLOT handed out, which the test may not have bound yet (with
        only those free, one of them, but never the last one: one
        handed out two takes before may come again). Raises PortsError
        when none is."""
        while True:
            while self.fresh:
                p = self.fresh.pop(0)
                if port_free(p):
                    self.given.append(p)
                    self.last.append(p)
                    return p
            if not self._lock_slot():
                break
        # Not one of the last SLOT handed out, which the test may not
        # have bound yet; with none such free, not the last one at least.
        for recent in (list(self.last), list(self.last)[-1:]):
            for _ in range(len(self.given)):
                p = self.given[self.reuse % len(self.given)]
                self.reuse += 1
                if p not in recent and port_free(p):
                    self.last.append(p)
                    return p
        if not self.given:
            raise PortsError(f"no free port in {self.lo}-{self.hi}: the "
                             f"slots this process holds are busy and the "
                             f"rest are locked by other runs")
        raise PortsError(f"no free port in {self.lo}-{self.hi}: the "
                         f"{len(self.locks)} slots this process holds have "
                         f"none free but the last port it handed out "
                         f"({self.last[-1]}, perhaps not bound yet), and it "
                         f"can lock no other ({SLOTS_MAX} at the most, the "
                         f"rest locked by other runs)")

    def close(self):
        for _, fd in self.locks:
            os.close(fd)
        self.locks = []
        self.fresh = []


_ports = None


def free_port():
    """A free port of SEMCACHE_TEST_PORTS that no other process can be
    handed (see the module's comment): free for a listener that sets
    SO_REUSEADDR (a port can be in TIME_WAIT from an earlier run);
    raises PortsError, saying why, when the range is bad or has none
    left."""
    global _ports
    if _ports is None:
        _ports = Ports(*test_range())
    return _ports.take()
