/* test_ports.h - the C tests' TCP ports: free ones of
 * SEMCACHE_TEST_PORTS=LO-HI (by default 20000 up to the kernel's ephemeral
 * range, net.ipv4.ip_local_port_range), by the rules of the Python tests'
 * clients/python/testports.py, with the same lock files, so that no two
 * test processes at once, C or Python, hand out the same port.
 *
 * The range must lie below the ephemeral one: there the kernel hands a
 * port a test drew and released to any outgoing connection (or another
 * test's bind to port 0) before the server binds it. It is cut into slots
 * of 4 ports aligned on LO; a process takes a slot, tried from one picked
 * by its pid, only when it can flock the slot's file
 * (/tmp/semcache-test-ports.FIRST.lock), held until it exits. */
#ifndef SC_TEST_PORTS_H
#define SC_TEST_PORTS_H

#include <stdbool.h>

#define SC_TEST_PORTS_SLOT      4 /* ports of a slot */
#define SC_TEST_PORTS_SLOTS_MAX 8 /* a process's slots at the most */

/* The range of SEMCACHE_TEST_PORTS into *lo and *hi. False, said on
 * stderr after "who: ", when it is malformed, under 4 ports or reaches
 * the ephemeral range. */
bool sc_test_ports_range(const char *who, int *lo, int *hi);

/* Makes this process's slots come from lo-hi from slot index start on
 * (instead of the range and the pid); for tests of this helper. Call it
 * before any port is taken. */
void sc_test_ports_at(int lo, int hi, int start);

/* One free port (a listener with SO_REUSEADDR could bind it now) of a
 * slot this process holds, never handed out before while it can lock
 * another slot (SC_TEST_PORTS_SLOTS_MAX at the most); past that, one it
 * handed out before that is free again, oldest first, but none of the
 * last SC_TEST_PORTS_SLOT handed out, which the caller may not have bound
 * yet (with only those free, one of them, never the last: one handed out
 * two takes before may come again, as in testports.py). Nothing binds it
 * but the caller, so a port left unbound is one where nothing listens.
 * -1, said on stderr after "who: ", when the range is bad or has none. */
int sc_test_port_take(const char *who);

/* sc_test_port_take(), the tests' free_port(): when there is no port,
 * the test process exits 1 (the reason said on stderr). */
int sc_test_port(const char *who);

/* A whole slot's 4 ports into ports[], each free now, for a test that
 * binds and releases them over and over: a slot of which it hands out no
 * port by sc_test_port_take() and which it never shares. False, said on
 * stderr, when the range is bad or has no such slot left. */
bool sc_test_ports_slot(const char *who, int ports[SC_TEST_PORTS_SLOT]);

#endif
