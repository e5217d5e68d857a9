/* regress_main.c - replays files through the fuzz targets without
 * libFuzzer (any compiler): `fuzz_regress DIR...` where each DIR is named
 * after its target (corpus/<target>, regress/<target>) and holds inputs
 * for it. Each target's LLVMFuzzerTestOneInput is compiled under the name
 * fuzz_<target>_one. A crash is the failure; exits 0 when all ran. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fuzz_dispatch_one(const uint8_t *data, size_t size);
int fuzz_mp_one(const uint8_t *data, size_t size);
int fuzz_embed_table_one(const uint8_t *data, size_t size);
int fuzz_prices_one(const uint8_t *data, size_t size);
int fuzz_config_one(const uint8_t *data, size_t size);
int fuzz_persist_one(const uint8_t *data, size_t size);
int fuzz_http_one(const uint8_t *data, size_t size);
int fuzz_proxy_one(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    int (*fn)(const uint8_t *, size_t);
} targets[] = {{"fuzz_dispatch", fuzz_dispatch_one},
               {"fuzz_mp", fuzz_mp_one},
               {"fuzz_embed_table", fuzz_embed_table_one},
               {"fuzz_prices", fuzz_prices_one},
               {"fuzz_config", fuzz_config_one},
               {"fuzz_persist", fuzz_persist_one},
               {"fuzz_http", fuzz_http_one},
               {"fuzz_proxy", fuzz_proxy_one}};

static int replay_file(int (*fn)(const uint8_t *, size_t), const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "fuzz_regress: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(f);
    if (buf == NULL) {
        return -1;
    }
    /* An exact-size copy, so ASan sees reads past the end as libFuzzer
     * would. */
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, buf, n);
    free(buf);
    fn(exact, n);
    free(exact);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        const char *base = strrchr(argv[i], '/');
        base = base && base[1] ? base + 1 : argv[i];
        int (*fn)(const uint8_t *, size_t) = NULL;
        for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
            if (strcmp(base, targets[t].name) == 0) {
                fn = targets[t].fn;
            }
        }
        if (fn == NULL) {
            fprintf(stderr, "fuzz_regress: %s names no target\n", argv[i]);
            return 2;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            continue; /* a target with no files there yet */
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
            bad += replay_file(fn, path) != 0;
            files++;
        }
        closedir(d);
    }
    printf("fuzz_regress: %d files replayed, %d unreadable\n", files, bad);
    return bad ? 1 : 0;
}
