/* test_ctmp.c - a holder of a C test's temporary directory (test_tmp.h),
 * for tests/test_tmpdirs.py: makes it, and a file in it, prints the
 * directory's path on one line (or "error: " and why), then waits for its
 * stdin to close and exits (or, given "sweep BASE", prints how many run
 * directories of BASE the sweep removed; given "short MAX", does as with
 * no argument with sc_test_tmp_short_dir(MAX)'s directory; given "fork",
 * does as with no argument and forks first a child that waits for stdin
 * too, as a test's child between its fork and its exec holds the lock;
 * given "swept", does as with no argument with its first
 * .semcache-new.PID.* directory removed before it is locked, as a sweep
 * from another pid namespace could).
 *
 *   test_ctmp
 *   test_ctmp sweep BASE
 *   test_ctmp short MAX
 *   test_ctmp fork
 *   test_ctmp swept */
#define _POSIX_C_SOURCE 200809L /* fork */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_tmp.h"

/* sc_test_tmp_new_hook for "swept": removes the first directory. */
static void sweep_first(const char *path)
{
    static bool done;
    if (!done) {
        done = true;
        sc_test_tmp_remove(path);
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "sweep") == 0) {
        printf("%d\n", sc_test_tmp_sweep(argv[2]));
        return 0;
    }
    bool short_dir = argc == 3 && strcmp(argv[1], "short") == 0;
    bool fork_child = argc == 2 && strcmp(argv[1], "fork") == 0;
    bool swept = argc == 2 && strcmp(argv[1], "swept") == 0;
    if (argc != 1 && !short_dir && !fork_child && !swept) {
        fprintf(stderr,
                "usage: test_ctmp [sweep BASE | short MAX | fork | swept]\n");
        return 2;
    }
    if (swept) {
        sc_test_tmp_new_hook = sweep_first;
    }
    char path[4200];
    const char *dir =
        short_dir
            ? sc_test_tmp_short_dir("test_ctmp", strtoul(argv[2], NULL, 10))
            : sc_test_tmp_dir("test_ctmp");
    FILE *f = NULL;
    if (dir != NULL &&
        snprintf(path, sizeof(path), "%s/file", dir) < (int)sizeof(path)) {
        f = fopen(path, "w");
    }
    if (f == NULL) {
        printf("error: no directory\n");
        fflush(stdout);
        return 1;
    }
    fputs("x\n", f);
    fclose(f);
    pid_t child = fork_child ? fork() : 1;
    if (child < 0) {
        printf("error: no fork\n");
        fflush(stdout);
        return 1;
    }
    if (child == 0) { /* holds the directory's descriptor, and its lock */
        while (getchar() != EOF) {
        }
        _exit(0);
    }
    printf("%s\n", dir);
    fflush(stdout);
    int c;
    while ((c = getchar()) != EOF) {
    }
    return 0;
}
