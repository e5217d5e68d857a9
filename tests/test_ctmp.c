/* test_ctmp.c - a holder of a C test's temporary directory (test_tmp.h),
 * for tests/test_tmpdirs.py: makes it, and a file in it, prints the
 * directory's path on one line (or "error: " and why), then waits for its
 * stdin to close and exits (or, given "sweep BASE", prints how many run
 * directories of BASE the sweep removed; given "sweep BASE SWAP LINK",
 * does so with the directory SWAP's parent, once the sweep has opened
 * SWAP and before it removes what is in it, renamed to PARENT.moved and
 * a symbolic link to LINK put in its place, as a process racing the
 * sweep could, and "swapped" after the count when it was; given "sweep
 * BASE SWAP DEST move", does so with SWAP itself renamed to DEST there
 * instead, as if moved out from under the sweep; given "short
 * MAX", does as with no argument with sc_test_tmp_short_dir(MAX)'s
 * directory; given "fork", does as with no argument and forks first a
 * child that waits for stdin too, as a test's child between its fork and
 * its exec holds the lock; given "swept", does as with no argument with
 * its first .semcache-new.PID.* directory removed before it is locked,
 * as a sweep from another pid namespace could; given "remove PATH",
 * prints sc_test_tmp_remove(PATH)'s return, 0 or -1; given
 * "sweep-sockets DIR", prints how many old ipc:// sockets of DIR
 * sc_test_tmp_sweep_old_sockets() removed; given "old-sockets DIR",
 * makes its run directory, as a test's start does, with the old sockets
 * looked for in DIR instead of /tmp, prints "ok" (or "error: " and why)
 * and exits).
 *
 *   test_ctmp
 *   test_ctmp sweep BASE [SWAP LINK | SWAP DEST move]
 *   test_ctmp short MAX
 *   test_ctmp fork
 *   test_ctmp swept
 *   test_ctmp remove PATH
 *   test_ctmp sweep-sockets DIR
 *   test_ctmp old-sockets DIR */
#define _POSIX_C_SOURCE 200809L /* fork */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_tmp.h"

static const char *swap_dir, *swap_link;
static bool swapped, swap_move;

/* sc_test_tmp_remove_hook for "sweep BASE SWAP LINK": once the sweep is
 * in SWAP, SWAP's parent is moved away and a link to LINK takes its
 * name: a removal by path from there on follows the link. */
static void swap_parent(const char *path)
{
    if (swap_dir == NULL || strcmp(path, swap_dir) != 0) {
        return;
    }
    swap_dir = NULL;
    if (swap_move) { /* SWAP itself, to DEST */
        if (rename(path, swap_link) != 0) {
            perror("test_ctmp: move");
            return;
        }
        swapped = true;
        return;
    }
    char parent[4096], moved[4200];
    snprintf(parent, sizeof(parent), "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        return;
    }
    *slash = '\0';
    snprintf(moved, sizeof(moved), "%s.moved", parent);
    if (rename(parent, moved) != 0 || symlink(swap_link, parent) != 0) {
        perror("test_ctmp: swap");
        return;
    }
    swapped = true;
}

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
    if ((argc == 3 || argc == 5 ||
         (argc == 6 && strcmp(argv[5], "move") == 0)) &&
        strcmp(argv[1], "sweep") == 0) {
        if (argc >= 5) {
            swap_dir = argv[3];
            swap_link = argv[4];
            swap_move = argc == 6;
            sc_test_tmp_remove_hook = swap_parent;
        }
        int removed = sc_test_tmp_sweep(argv[2]);
        printf("%d%s\n", removed,
               argc == 3 ? ""
               : swapped ? " swapped"
                         : " not-swapped");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "sweep-sockets") == 0) {
        printf("%d\n", sc_test_tmp_sweep_old_sockets(argv[2]));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "old-sockets") == 0) {
        sc_test_tmp_old_sockets_dir = argv[2];
        printf("%s\n", sc_test_tmp_dir("test_ctmp") != NULL
                           ? "ok"
                           : "error: no directory");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "remove") == 0) {
        printf("%d\n", sc_test_tmp_remove(argv[2]));
        return 0;
    }
    bool short_dir = argc == 3 && strcmp(argv[1], "short") == 0;
    bool fork_child = argc == 2 && strcmp(argv[1], "fork") == 0;
    bool swept = argc == 2 && strcmp(argv[1], "swept") == 0;
    if (argc != 1 && !short_dir && !fork_child && !swept) {
        fprintf(stderr,
                "usage: test_ctmp [sweep BASE [SWAP LINK | SWAP DEST move] | "
                "short MAX | fork | swept | remove PATH | sweep-sockets DIR | "
                "old-sockets DIR]\n");
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
