/* fuzz_config.c - libFuzzer target over the configuration file loader
 * (sc_config_load on the input as a file, a memfd): hostile JSON must be
 * refused with a message, never crash or leak; a file that loads must give
 * values inside the documented ranges. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/config.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_config: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_config", MFD_CLOEXEC);
    if (fd < 0) {
        die("memfd_create");
    }
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        die("write");
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    sc_config cfg;
    if (sc_config_init(&cfg) != SC_OK) {
        die("init");
    }
    char msg[512];
    msg[0] = '\0';
    sc_err rc = sc_config_load(&cfg, path, msg, sizeof(msg));
    if (rc != SC_OK) {
        if (memchr(msg, '\0', sizeof(msg)) == NULL || msg[0] == '\0') {
            die("refused without a message");
        }
    } else {
        if (cfg.nlisten > SC_SERVER_MAX_LISTEN || cfg.threads > 1024 ||
            (cfg.recv_max != 0 &&
             (cfg.recv_max < 1024 || cfg.recv_max > (1u << 30))) ||
            cfg.http_max_conns > (1u << 20) || cfg.max_clients > (1u << 20) ||
            cfg.http_stop_grace_ms > 3600000 || cfg.data_dir == NULL ||
            cfg.nns > SC_CONFIG_MAX_NS) {
            die("loaded values out of range");
        }
        for (unsigned i = 0; i < cfg.nlisten; i++) {
            if (cfg.listen[i] == NULL) {
                die("NULL listener");
            }
        }
        for (size_t i = 0; i < cfg.nns; i++) {
            if (memchr(cfg.ns[i].name, '\0', sizeof(cfg.ns[i].name)) == NULL) {
                die("namespace name not terminated");
            }
        }
        char ep[SC_CONFIG_PATH_MAX];
        (void)sc_config_embed_path(&cfg, ep, sizeof(ep));
    }
    sc_config_fini(&cfg);
    close(fd);
    return 0;
}
