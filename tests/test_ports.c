/* test_ports.c - the C tests' ports (test_ports.h); the rules and lock
 * files of clients/python/testports.py. */
#define _GNU_SOURCE /* O_CLOEXEC, flock */
#include "test_ports.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

enum { CAP = SC_TEST_PORTS_SLOTS_MAX * SC_TEST_PORTS_SLOT };

/* This process's slots and ports (one process's tests run on one thread
 * when they take ports). */
static struct {
    bool ready;
    int lo, hi, nslots, start;
    int tried;  /* slots tried so far, from start on */
    int nlocks; /* slots held (their lock files open until exit) */
    int fresh[SC_TEST_PORTS_SLOT], nfresh, next; /* the last slot's */
    int given[CAP], ngiven;                      /* handed out, oldest first */
    int reuse; /* where sc_test_port() looks next among given */
    int last[SC_TEST_PORTS_SLOT], nlast; /* the last handed out, a ring */
} st;

/* The first port of the kernel's ephemeral range, as it is set (1024 is
 * a range's first port too; 32768 only when it cannot be read). */
static int ephemeral_low(void)
{
    int lo = 0, hi = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) {
            lo = 0;
        }
        fclose(f);
    }
    return lo > 0 ? lo : 32768;
}

/* Whether a listener could bind 127.0.0.1:port now, with SO_REUSEADDR as
 * nng's listeners set it (so a port left in TIME_WAIT is free). */
static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return false;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

bool sc_test_ports_range(const char *who, int *lo, int *hi)
{
    int eph = ephemeral_low();
    *lo = eph > 24000 ? 20000 : 1024;
    *hi = eph - 1;
    const char *env = getenv("SEMCACHE_TEST_PORTS");
    if (env != NULL && *env != '\0') {
        char end = 0;
        if (sscanf(env, "%d-%d%c", lo, hi, &end) != 2 || *lo < 1024 ||
            *hi < *lo + SC_TEST_PORTS_SLOT - 1 || *hi > 65535) {
            fprintf(stderr,
                    "%s: SEMCACHE_TEST_PORTS=%s: want LO-HI, 4 ports or "
                    "more of 1024-65535\n",
                    who, env);
            return false;
        }
        if (*hi >= eph) {
            fprintf(stderr,
                    "%s: SEMCACHE_TEST_PORTS=%s reaches the kernel's "
                    "ephemeral ports (%d up): the tests' ports must lie "
                    "below them\n",
                    who, env, eph);
            return false;
        }
    }
    if (*hi < *lo + SC_TEST_PORTS_SLOT - 1) {
        fprintf(stderr, "%s: no 4 ports below the ephemeral ones (%d)\n", who,
                eph);
        return false;
    }
    return true;
}

void sc_test_ports_at(int lo, int hi, int start)
{
    st.lo = lo;
    st.hi = hi;
    st.nslots = (hi - lo + 1) / SC_TEST_PORTS_SLOT;
    st.start = st.nslots > 0 ? start % st.nslots : 0;
    st.ready = true;
}

static bool ready(const char *who)
{
    if (!st.ready) {
        int lo, hi;
        if (!sc_test_ports_range(who, &lo, &hi)) {
            return false;
        }
        sc_test_ports_at(lo, hi, (int)getpid());
    }
    return true;
}

/* Locks the next slot no other process holds; its first port (its lock
 * file's descriptor in *fd), or -1 when none is left or this process holds
 * SC_TEST_PORTS_SLOTS_MAX. */
static int lock_slot(int *lockfd)
{
    while (st.tried < st.nslots && st.nlocks < SC_TEST_PORTS_SLOTS_MAX) {
        int first =
            st.lo + (st.start + st.tried) % st.nslots * SC_TEST_PORTS_SLOT;
        st.tried++;
        char path[64];
        snprintf(path, sizeof(path), "/tmp/semcache-test-ports.%d.lock", first);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) {
            continue;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd); /* another process's slot */
            continue;
        }
        st.nlocks++; /* fd stays open, the slot locked, until exit */
        *lockfd = fd;
        return first;
    }
    return -1;
}

/* p, noted as the last handed out. */
static int hand_out(int p)
{
    st.last[st.nlast++ % SC_TEST_PORTS_SLOT] = p;
    return p;
}

/* Whether p is one of the last k handed out (k <= SC_TEST_PORTS_SLOT). */
static bool recent(int p, int k)
{
    for (int i = 1; i <= k && i <= st.nlast; i++) {
        if (st.last[(st.nlast - i) % SC_TEST_PORTS_SLOT] == p) {
            return true;
        }
    }
    return false;
}

int sc_test_port_take(const char *who)
{
    if (!ready(who)) {
        return -1;
    }
    for (;;) {
        while (st.next < st.nfresh) {
            int p = st.fresh[st.next++];
            if (port_free(p)) {
                st.given[st.ngiven++] = p;
                return hand_out(p);
            }
        }
        int fd;
        int first = lock_slot(&fd);
        if (first < 0) {
            break;
        }
        for (int i = 0; i < SC_TEST_PORTS_SLOT; i++) {
            st.fresh[i] = first + i;
        }
        st.nfresh = SC_TEST_PORTS_SLOT;
        st.next = 0;
    }
    /* Not one of the last SC_TEST_PORTS_SLOT handed out, which the test
     * may not have bound yet; with none such free, not the last one at
     * least. */
    static const int spare[] = {SC_TEST_PORTS_SLOT, 1};
    for (size_t k = 0; k < sizeof(spare) / sizeof(spare[0]); k++) {
        for (int i = 0; i < st.ngiven; i++) {
            int p = st.given[st.reuse++ % st.ngiven];
            if (!recent(p, spare[k]) && port_free(p)) {
                return hand_out(p);
            }
        }
    }
    if (st.ngiven == 0) {
        fprintf(stderr,
                "%s: no free port in %d-%d: the slots this process holds "
                "are busy and the rest are locked by other runs\n",
                who, st.lo, st.hi);
    } else {
        fprintf(stderr,
                "%s: no free port in %d-%d: the %d slots this process holds "
                "have none free but the last port it handed out (%d, "
                "perhaps not bound yet), and it can lock no other (%d at "
                "the most, the rest locked by other runs)\n",
                who, st.lo, st.hi, st.nlocks,
                st.last[(st.nlast - 1) % SC_TEST_PORTS_SLOT],
                SC_TEST_PORTS_SLOTS_MAX);
    }
    return -1;
}

bool sc_test_ports_slot(const char *who, int ports[SC_TEST_PORTS_SLOT])
{
    if (!ready(who)) {
        return false;
    }
    int got = 0;
    while (got < SC_TEST_PORTS_SLOT) {
        int fd;
        int first = lock_slot(&fd);
        if (first < 0) {
            break;
        }
        got = 0;
        while (got < SC_TEST_PORTS_SLOT && port_free(first + got)) {
            ports[got] = first + got;
            got++;
        }
        if (got < SC_TEST_PORTS_SLOT) {
            close(fd); /* a port of it held by something else: unlocked */
            st.nlocks--;
        } /* a run never takes a port of the next slot, which another run
           * may have locked and be binding and releasing */
    }
    if (got < SC_TEST_PORTS_SLOT) {
        fprintf(stderr,
                "%s: no slot of 4 free ports in %d-%d that another run has "
                "not locked\n",
                who, st.lo, st.hi);
        return false;
    }
    return true;
}

int sc_test_port(const char *who)
{
    int p = sc_test_port_take(who);
    if (p < 0) {
        exit(1);
    }
    return p;
}
