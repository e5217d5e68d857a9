/* test_ctmp.c - a holder of a C test's temporary directory (test_tmp.h),
 * for tests/test_tmpdirs.py: makes it, and a file in it, prints the
 * directory's path on one line (or "error: " and why), then waits for its
 * stdin to close and exits (or, given "sweep BASE", prints how many run
 * directories of BASE the sweep removed).
 *
 *   test_ctmp
 *   test_ctmp sweep BASE */
#include <stdio.h>
#include <string.h>

#include "test_tmp.h"

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "sweep") == 0) {
        printf("%d\n", sc_test_tmp_sweep(argv[2]));
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: test_ctmp [sweep BASE]\n");
        return 2;
    }
    char path[512];
    const char *dir = sc_test_tmp_dir("test_ctmp");
    FILE *f =
        dir == NULL
            ? NULL
            : fopen(sc_test_tmp_path("test_ctmp", path, sizeof(path), "file"),
                    "w");
    if (f == NULL) {
        printf("error: no directory\n");
        fflush(stdout);
        return 1;
    }
    fputs("x\n", f);
    fclose(f);
    printf("%s\n", dir);
    fflush(stdout);
    int c;
    while ((c = getchar()) != EOF) {
    }
    return 0;
}
