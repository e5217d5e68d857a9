/* test_cports.c - a holder of the C tests' ports (test_ports.h), for
 * tests/test_ports.py: takes N ports by sc_test_port_take() (or, with --slot,
 * one whole slot by sc_test_ports_slot()), prints them on one line (or
 * "error: " and why), and holds their slots until its stdin closes. With
 * --busy, it then listens on each of the N but the first and takes two
 * more, printed after them on that line (a port, or "error").
 *
 *   test_cports [--slot | --busy] START N
 *
 * START is the slot index of SEMCACHE_TEST_PORTS tried first, or "pid"
 * for the pick by pid the tests make. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_ports.h"

/* A listener on 127.0.0.1:port, open until exit (none when it cannot
 * bind: the port is busy then all the same). */
static void listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
            listen(fd, 1) != 0) {
            close(fd);
        }
    }
}

int main(int argc, char **argv)
{
    int a = 1;
    bool slot = argc > 1 && strcmp(argv[1], "--slot") == 0;
    bool busy = argc > 1 && strcmp(argv[1], "--busy") == 0;
    a += slot || busy;
    if (argc != a + 2) {
        fprintf(stderr, "usage: test_cports [--slot | --busy] START|pid N\n");
        return 2;
    }
    int lo, hi, n = atoi(argv[a + 1]);
    if (!sc_test_ports_range("test_cports", &lo, &hi)) {
        printf("error: bad range\n");
        fflush(stdout);
        return 1;
    }
    if (strcmp(argv[a], "pid") != 0) {
        sc_test_ports_at(lo, hi, atoi(argv[a]));
    }
    if (slot) {
        int p[SC_TEST_PORTS_SLOT];
        if (!sc_test_ports_slot("test_cports", p)) {
            printf("error: no slot\n");
        } else {
            printf("%d %d %d %d\n", p[0], p[1], p[2], p[3]);
        }
    } else {
        for (int i = 0; i < n; i++) {
            int p = sc_test_port_take("test_cports");
            if (p < 0) {
                printf("%serror: no port", i > 0 ? " " : "");
                busy = false;
                break;
            }
            printf("%s%d", i > 0 ? " " : "", p);
            if (busy && i > 0) {
                listen_on(p);
            }
        }
        for (int i = 0; busy && i < 2; i++) {
            int p = sc_test_port_take("test_cports");
            if (p < 0) {
                printf(" error");
            } else {
                printf(" %d", p);
            }
        }
        printf("\n");
    }
    fflush(stdout);
    int c;
    while ((c = getchar()) != EOF) {
    }
    return 0;
}
