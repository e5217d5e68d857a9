/* test_tmp.c - the C tests' temporary directory (test_tmp.h); the rules
 * of clients/python/testtmp.py. */
#define _GNU_SOURCE /* O_CLOEXEC, O_DIRECTORY, flock, renameat2 */
#include "test_tmp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PREFIX     "semcache-run."
#define NEW_PREFIX ".semcache-new." /* before it is locked and named */
#define MAKE_TRIES 8 /* a directory swept before it was locked: made anew */

void (*sc_test_tmp_new_hook)(const char *path);
void (*sc_test_tmp_remove_hook)(const char *path);

static char run_dir[4096];
static char run_base[4096]; /* where run_dir is */
static pid_t run_owner; /* the process that made it: a fork does not own it */

/* One directory of the tree being removed (remove_tree()): the names
 * read from it (NUL-terminated, one after another), the next to remove,
 * its identity (to check ".." against on the way back up) and the length
 * of its path in the hook's buffer. */
struct level {
    char *names;
    size_t len, pos;
    dev_t dev;
    ino_t ino;
    size_t path_len;
    bool progress; /* this pass removed something */
};

/* A removal's state: where the first failure was (path, errno). */
struct removal {
    char path[4096]; /* the directory being worked in, for the hook */
    char where[4096];
    int err;
};

static void failed(struct removal *r, size_t len, const char *name, int err)
{
    if (r->err == 0) {
        r->err = err;
        snprintf(r->where, sizeof(r->where), "%.*s%s%s", (int)len, r->path,
                 name == NULL ? "" : "/", name == NULL ? "" : name);
    }
}

/* Reads the names in the directory fd (kept open) into l (all but "."
 * and ".."): through a copy of fd, closed before it returns, so that no
 * directory stream stays open while the tree below is removed. 0 or an
 * errno. */
static int read_names(int fd, struct level *l)
{
    l->len = 0;
    l->pos = 0;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        return errno;
    }
    DIR *d = fdopendir(copy);
    if (d == NULL) {
        int err = errno;
        close(copy);
        return err;
    }
    rewinddir(d); /* the copy shares fd's offset: read from the start */
    size_t cap = 0;
    int err = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        size_t n = strlen(e->d_name) + 1;
        if (l->len + n > cap) {
            size_t ncap = cap == 0 ? 256 : cap;
            while (ncap < l->len + n) {
                ncap *= 2;
            }
            char *p = realloc(l->names, ncap);
            if (p == NULL) {
                err = ENOMEM;
                break;
            }
            l->names = p;
            cap = ncap;
        }
        memcpy(l->names + l->len, e->d_name, n);
        l->len += n;
        errno = 0;
    }
    if (err == 0 && e == NULL && errno != 0) {
        err = errno;
    }
    closedir(d);
    return err;
}

/* Removes all in the directory top (a descriptor, kept open; r->path its
 * path), as far as it can, through descriptors alone: a subdirectory is
 * opened from its parent's descriptor, never following a link, and each
 * name removed relative to the directory that holds it, so that a
 * directory above swapped for a link meanwhile takes nothing outside with
 * it (a removal by full path, as nftw's, follows it). A link is removed,
 * not followed.
 *
 * Any depth, with at most three descriptors open at once besides top:
 * the names of each directory are read into memory and its stream closed
 * before the removal goes down, and only the directory worked in is held
 * open; the way back up is its "..", taken only when it is the directory
 * (device, inode) the removal came down from: one moved elsewhere
 * meanwhile stops the removal there. A directory is read again once its
 * names are done, until it is empty or a pass removes nothing (names made
 * meanwhile go too). 0 when top is left empty; else -1 with the first
 * failure in r. */
static int remove_tree(int top, struct removal *r)
{
    size_t cap = 8, depth = 0;
    struct level *lv = calloc(cap, sizeof(*lv));
    int cur = top;
    int rc = -1;
    struct stat st;
    if (lv == NULL) {
        failed(r, strlen(r->path), NULL, ENOMEM);
        return -1;
    }
    if (fstat(top, &st) != 0) {
        failed(r, strlen(r->path), NULL, errno);
        goto out;
    }
    lv[0].dev = st.st_dev;
    lv[0].ino = st.st_ino;
    lv[0].path_len = strlen(r->path);
    depth = 1;
    if (sc_test_tmp_remove_hook != NULL) {
        sc_test_tmp_remove_hook(r->path);
    }
    int err = read_names(top, &lv[0]);
    if (err != 0) {
        failed(r, lv[0].path_len, NULL, err);
        goto out;
    }
    for (;;) {
        struct level *l = &lv[depth - 1];
        size_t plen = l->path_len;
        r->path[plen] = '\0';
        if (l->pos < l->len) {
            const char *name = l->names + l->pos;
            l->pos += strlen(name) + 1;
            /* A directory when the open takes it; anything else (a file,
             * a link: ELOOP or ENOTDIR) is unlinked. A directory it may
             * not read (mode 000: EACCES) is removed when it is empty,
             * as rmdir would (it was left, "Permission denied"). */
            int sub = openat(cur, name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                int oerr = errno;
                if (oerr == ENOTDIR || oerr == ELOOP) {
                    if (unlinkat(cur, name, 0) == 0) {
                        l->progress = true;
                    } else if (errno != ENOENT) {
                        failed(r, plen, name, errno);
                    }
                } else if (oerr == EACCES &&
                           unlinkat(cur, name, AT_REMOVEDIR) == 0) {
                    l->progress = true;
                } else if (oerr != ENOENT) {
                    failed(r, plen, name, oerr);
                }
                continue;
            }
            if (fstat(sub, &st) != 0) {
                failed(r, plen, name, errno);
                close(sub);
                continue;
            }
            if (depth == cap) {
                struct level *p = realloc(lv, 2 * cap * sizeof(*lv));
                if (p == NULL) {
                    failed(r, plen, name, ENOMEM);
                    close(sub);
                    continue;
                }
                memset(p + cap, 0, cap * sizeof(*p));
                lv = p;
                cap *= 2;
                l = &lv[depth - 1];
            }
            struct level *c = &lv[depth];
            c->dev = st.st_dev;
            c->ino = st.st_ino;
            c->progress = false;
            int w =
                snprintf(r->path + plen, sizeof(r->path) - plen, "/%s", name);
            /* Too long: the hook sees the parent's. */
            c->path_len = w > 0 && (size_t)w < sizeof(r->path) - plen
                              ? plen + (size_t)w
                              : plen;
            r->path[c->path_len] = '\0';
            if (sc_test_tmp_remove_hook != NULL) {
                sc_test_tmp_remove_hook(r->path);
            }
            err = read_names(sub, c);
            if (err != 0) {
                failed(r, c->path_len, NULL, err);
                close(sub);
                continue;
            }
            if (cur != top) {
                close(cur);
            }
            cur = sub;
            depth++;
            continue;
        }
        /* This pass is done: read again; go on while it removes. */
        bool progress = l->progress;
        l->progress = false;
        err = read_names(cur, l);
        if (err != 0) {
            failed(r, plen, NULL, err);
        } else if (l->len > 0 && progress) {
            continue;
        } else if (l->len > 0) {
            failed(r, plen, NULL, ENOTEMPTY); /* said already if not */
        }
        bool empty = err == 0 && l->len == 0;
        if (depth == 1) {
            rc = empty ? 0 : -1;
            break;
        }
        /* Back up to the parent, through ".." when it is the one the
         * removal came down from. */
        struct level *p = &lv[depth - 2];
        int up = top;
        if (depth > 2) {
            up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (up < 0 || fstat(up, &st) != 0 || st.st_dev != p->dev ||
                st.st_ino != p->ino) {
                failed(r, plen, "..", up < 0 ? errno : ESTALE);
                if (up >= 0) {
                    close(up);
                }
                break; /* its parent is elsewhere now: stop */
            }
        }
        close(cur);
        cur = up;
        depth--;
        /* The directory just emptied, now from its parent: its name is
         * the one before p->pos. */
        const char *name = p->names + p->pos - 1;
        while (name > p->names && name[-1] != '\0') {
            name--;
        }
        r->path[p->path_len] = '\0';
        if (!empty) {
            continue;
        }
        if (unlinkat(cur, name, AT_REMOVEDIR) == 0) {
            p->progress = true;
        } else if (errno == ENOTDIR && unlinkat(cur, name, 0) == 0) {
            p->progress = true; /* swapped for a link meanwhile: removed */
        } else if (errno != ENOENT) {
            failed(r, p->path_len, name, errno);
        }
    }
out:
    if (cur != top) {
        close(cur);
    }
    for (size_t i = 0; i < cap; i++) {
        free(lv[i].names);
    }
    free(lv);
    return rc;
}

/* Removes the directory fd (opened from parent as name; path: its path)
 * with all in it, then its name; 0, or -1 said on stderr (path, where
 * the first failure was and its errno) with errno set. fd stays open. */
static int remove_dir_at(int parent, const char *name, int fd, const char *path)
{
    struct removal *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        fprintf(stderr, "test_tmp: cannot remove %s: %s\n", path,
                strerror(ENOMEM));
        errno = ENOMEM;
        return -1;
    }
    snprintf(r->path, sizeof(r->path), "%s", path);
    int rc = remove_tree(fd, r);
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) != 0 &&
        !(errno == ENOTDIR && unlinkat(parent, name, 0) == 0) &&
        errno != ENOENT) {
        r->err = errno;
        snprintf(r->where, sizeof(r->where), "%s", path);
        rc = -1;
    }
    if (rc != 0) {
        int err = r->err != 0 ? r->err : ENOTEMPTY;
        if (r->err == 0 || strcmp(r->where, path) == 0) {
            fprintf(stderr, "test_tmp: cannot remove %s: %s\n", path,
                    strerror(err));
        } else {
            fprintf(stderr, "test_tmp: cannot remove %s: %s: %s\n", path,
                    r->where, strerror(err));
        }
        free(r);
        errno = err;
        return -1;
    }
    free(r);
    return 0;
}

int sc_test_tmp_remove(const char *path)
{
    /* The last name is opened from its parent's descriptor with
     * O_NOFOLLOW: a link there is removed, not followed. Trailing slashes
     * are dropped first (open() follows a link named "link/" even with
     * O_NOFOLLOW); "/", ".", ".." and names ending in them are refused
     * (they would remove a directory under another name). */
    char buf[4096];
    int len = snprintf(buf, sizeof(buf), "%s", path);
    int err = EINVAL;
    if (len < 0 || len >= (int)sizeof(buf)) {
        err = ENAMETOOLONG;
        goto refused;
    }
    while (len > 1 && buf[len - 1] == '/') {
        buf[--len] = '\0';
    }
    char *slash = strrchr(buf, '/');
    const char *last = slash == NULL ? buf : slash + 1;
    const char *dir = slash == NULL ? "." : slash == buf ? "/" : buf;
    if (*last == '\0' || strcmp(last, ".") == 0 || strcmp(last, "..") == 0) {
        goto refused;
    }
    if (slash != NULL && slash != buf) {
        *slash = '\0';
    }
    /* O_PATH: the parent needs search permission only, as a removal by
     * path does (a write-only base such as a 1733 drop directory left
     * every run directory in it with O_RDONLY). */
    int parent = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0) {
        if (errno == ENOENT) {
            return 0; /* nothing there */
        }
        err = errno;
        goto refused;
    }
    int rc = 0;
    int fd =
        openat(parent, last, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        rc = remove_dir_at(parent, last, fd, path);
        err = errno;
        close(fd);
    } else if (errno == ENOTDIR || errno == ELOOP) {
        /* A file or a link: removed, not followed. */
        if (unlinkat(parent, last, 0) != 0 && errno != ENOENT) {
            err = errno;
            fprintf(stderr, "test_tmp: cannot remove %s: %s\n", path,
                    strerror(err));
            rc = -1;
        }
    } else if (errno == EACCES) {
        /* A directory it may not read (mode 000): removed when empty. */
        err = EACCES;
        if (unlinkat(parent, last, AT_REMOVEDIR) != 0) {
            fprintf(stderr, "test_tmp: cannot remove %s: %s\n", path,
                    strerror(EACCES));
            rc = -1;
        }
    } else if (errno != ENOENT) {
        err = errno;
        fprintf(stderr, "test_tmp: cannot remove %s: %s\n", path,
                strerror(err));
        rc = -1;
    }
    close(parent);
    errno = err;
    return rc;
refused:
    fprintf(stderr, "test_tmp: cannot remove %s: %s\n", path, strerror(err));
    errno = err;
    return -1;
}

/* Whether the directory base/name (PREFIX or NEW_PREFIX, then PID.*) is
 * one whose process is alive; true for every other name. */
static bool owner_alive(const char *name)
{
    size_t skip = strncmp(name, PREFIX, strlen(PREFIX)) == 0 ? strlen(PREFIX)
                  : strncmp(name, NEW_PREFIX, strlen(NEW_PREFIX)) == 0
                      ? strlen(NEW_PREFIX)
                      : 0;
    if (skip == 0 || name[skip] < '0' || name[skip] > '9') {
        return true; /* not ours to judge: kept */
    }
    char *end;
    long pid = strtol(name + skip, &end, 10);
    if (*end != '.' || end[1] == '\0' || pid <= 0 || pid > INT_MAX) {
        return true;
    }
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int sc_test_tmp_sweep(const char *base)
{
    DIR *d = opendir(base);
    if (d == NULL) {
        return 0;
    }
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (owner_alive(e->d_name)) { /* or not a run's */
            continue;
        }
        char path[4096];
        if (snprintf(path, sizeof(path), "%s/%s", base, e->d_name) >=
            (int)sizeof(path)) {
            continue;
        }
        /* O_NOFOLLOW: a link of that name is no run's directory. */
        int fd = openat(dirfd(d), e->d_name,
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        /* Another user's is not this one's to remove (as root, a sweep
         * could remove anyone's). Its owner holds the lock while it runs
         * (in another pid namespace, too); a sweep beside this one holds
         * it while it removes. A NEW_PREFIX one is not locked yet by an
         * owner in another pid namespace whose pid this sweep misread:
         * removed, its owner makes another (make_run_dir()). Removed
         * through the descriptor locked, each name relative to its
         * directory's descriptor (remove_tree()): nothing is followed. One
         * left in part is said on stderr and not counted. */
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_uid == geteuid() &&
            flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            remove_dir_at(dirfd(d), e->d_name, fd, path) == 0) {
            removed++;
        }
        close(fd);
    }
    closedir(d);
    return removed;
}

/* The names the ipc:// sockets of the tests and benchmarks had in /tmp
 * before they moved into the run directory: a prefix, the pid, then a
 * suffix. Those with no pid in their name (test_dispatch's
 * /tmp/test-dispatch-NAME-XXXXXX directories) are not swept. */
static const struct {
    const char *prefix, *suffix;
} old_sockets[] = {
    {"test_e2e_nobody_", ".ipc"},     {"test_e2e_silent_", ".ipc"},
    {"test_e2e_fake_", ".ipc"},       {"test_e2e_oom_", ".ipc"},
    {"bench-service-", ".ipc"},       {"bench-echo-", ".ipc"},
    {"bench-hitrate-", ".ipc"},       {"semcache-e2e-", ".ipc"},
    {"test-dispatch-", ".ipc"},       {"test-dispatch-cap-", ".ipc"},
    {"test-dispatch-leave-", ".ipc"}, {"test-dispatch-undo-", ".ipc"},
    {"test-dispatch-total-", ".ipc"}, {"test-dispatch-unread-", ".ipc"},
    {"semcache-cli-test-", ".ipc"},   {"semcache-cli-test-", "-2.ipc"},
    {"semcache-cli-test-", "-3.ipc"}, {"semcache-cli-test-", "-b.ipc"},
};

const char *sc_test_tmp_old_sockets_dir = "/tmp";

/* The pid in name when it is one of old_sockets' names; 0 if not. */
static long old_socket_pid(const char *name)
{
    for (size_t i = 0; i < sizeof(old_sockets) / sizeof(old_sockets[0]); i++) {
        size_t n = strlen(old_sockets[i].prefix);
        if (strncmp(name, old_sockets[i].prefix, n) != 0 || name[n] < '0' ||
            name[n] > '9') {
            continue;
        }
        char *end;
        long pid = strtol(name + n, &end, 10);
        if (strcmp(end, old_sockets[i].suffix) == 0 && pid > 0 &&
            pid <= INT_MAX) {
            return pid;
        }
    }
    return 0;
}

/* Whether a connect() to the socket name of dir (its descriptor dfd) is
 * refused: no listener has it, so it is stale (nng's test before it
 * takes over an ipc:// path). A listener, one whose backlog is full, or
 * a name too long to reach keeps it. Through /proc/self/fd when dir/name
 * does not fit in sun_path. */
static bool socket_refused(const char *dir, int dfd, const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name) >=
            (int)sizeof(sa.sun_path) &&
        snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dfd,
                 name) >= (int)sizeof(sa.sun_path)) {
        return false;
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return false;
    }
    int rc = connect(s, (const struct sockaddr *)&sa, sizeof(sa));
    bool refused = rc != 0 && errno == ECONNREFUSED;
    close(s);
    return refused;
}

int sc_test_tmp_sweep_old_sockets(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = old_socket_pid(e->d_name);
        if (pid == 0 || kill((pid_t)pid, 0) == 0 || errno == EPERM) {
            continue; /* not one of them, or its process lives */
        }
        /* The name itself, not followed: a link, a file or a directory
         * of that name is kept, and so is another user's socket. The pid
         * alone says nothing from another pid namespace (a container
         * sharing /tmp): a socket is removed only when a connect() to it
         * is refused, no listener on it, and it is still the one
         * refused (the same inode) just before the unlink. */
        struct stat st, again;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISSOCK(st.st_mode) && st.st_uid == geteuid() &&
            socket_refused(dir, dirfd(d), e->d_name) &&
            fstatat(dirfd(d), e->d_name, &again, AT_SYMLINK_NOFOLLOW) == 0 &&
            again.st_ino == st.st_ino && again.st_dev == st.st_dev &&
            unlinkat(dirfd(d), e->d_name, 0) == 0) {
            removed++;
        }
    }
    closedir(d);
    return removed;
}

static char short_dir[64]; /* under /tmp, when run_dir is too long */

static void run_dir_remove(void)
{
    if (getpid() != run_owner) {
        return;
    }
    if (run_dir[0] != '\0') {
        sc_test_tmp_remove(run_dir);
    }
    if (short_dir[0] != '\0') {
        sc_test_tmp_remove(short_dir);
    }
}

/* Whether a file can be made in dir: Python's tempfile.gettempdir()
 * test, so that both pick the same base. */
static bool writable(const char *dir)
{
    char probe[4096];
    if (snprintf(probe, sizeof(probe), "%s/tmpXXXXXX", dir) >=
        (int)sizeof(probe)) {
        return false;
    }
    int fd = mkstemp(probe);
    if (fd < 0) {
        return false;
    }
    close(fd);
    unlink(probe);
    return true;
}

/* The base of the run directories, as Python's tempfile.gettempdir()
 * picks it: the first of $TMPDIR, $TEMP, $TMP (those set, not empty),
 * /tmp, /var/tmp, /usr/tmp and the working directory where a file can be
 * made, relative ones made absolute. Into out; false when none is. */
static bool pick_base(char *out, size_t size)
{
    const char *const fixed[] = {"/tmp", "/var/tmp", "/usr/tmp"};
    const char *cand[7];
    size_t n = 0;
    const char *env[] = {"TMPDIR", "TEMP", "TMP"};
    for (size_t i = 0; i < 3; i++) {
        const char *v = getenv(env[i]);
        if (v != NULL && *v != '\0') {
            cand[n++] = v;
        }
    }
    for (size_t i = 0; i < 3; i++) {
        cand[n++] = fixed[i];
    }
    cand[n++] = ".";
    char cwd[2048];
    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        cwd[0] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        int len = cand[i][0] == '/' || cwd[0] == '\0'
                      ? snprintf(out, size, "%s", cand[i])
                  : strcmp(cand[i], ".") == 0
                      ? snprintf(out, size, "%s", cwd)
                      : snprintf(out, size, "%s/%s", cwd, cand[i]);
        /* Python's abspath() drops a trailing '/'. */
        while (len > 1 && len < (int)size && out[len - 1] == '/') {
            out[--len] = '\0';
        }
        if (len > 0 && len < (int)size && writable(out)) {
            return true;
        }
    }
    return false;
}

/* Sweeps base and makes a run directory of this process in it, locked
 * until the exit, into out (size bytes); false, said on stderr after
 * "who: ", when it cannot. */
static bool make_run_dir(const char *who, const char *base, char *out,
                         size_t size)
{
    sc_test_tmp_sweep(base);
    /* Where the old names were, whatever base is. */
    sc_test_tmp_sweep_old_sockets(sc_test_tmp_old_sockets_dir);
    /* Made under NEW_PREFIX and this pid, locked, then renamed to its run
     * name: a sweep never sees a run directory unlocked, whatever it
     * reads of its pid (from another pid namespace, the pid says
     * nothing). A sweep takes a NEW_PREFIX one whose pid is gone and
     * whose lock is free: one left by a crash before its rename, or, read
     * from another pid namespace, this one before it is locked; then the
     * open, or the rename (of a directory removed under its lock), fails
     * with ENOENT and another is made. */
    char tmp[4096], dir[4096];
    int fd = -1;
    for (int tries = 0;; tries++) {
        if (snprintf(tmp, sizeof(tmp), "%s/" NEW_PREFIX "%d.XXXXXX", base,
                     (int)getpid()) >= (int)sizeof(tmp) ||
            snprintf(dir, sizeof(dir), "%s/" PREFIX "%d.XXXXXX", base,
                     (int)getpid()) >= (int)size ||
            mkdtemp(tmp) == NULL) {
            fprintf(stderr, "%s: cannot make a directory in %s: %s\n", who,
                    base, strerror(errno));
            return false;
        }
        memcpy(dir + strlen(dir) - 6, tmp + strlen(tmp) - 6, 6);
        if (sc_test_tmp_new_hook != NULL) {
            sc_test_tmp_new_hook(tmp);
        }
        /* Held until exit (in forks too: the directory stays theirs while
         * they run). */
        fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX) == 0 &&
            renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE) == 0) {
            break;
        }
        int err = errno;
        if (fd >= 0) {
            close(fd);
        }
        rmdir(tmp);
        if (err != ENOENT || tries + 1 == MAKE_TRIES) {
            fprintf(stderr, "%s: cannot lock %s and name it %s: %s\n", who, tmp,
                    dir, strerror(err));
            return false;
        }
    }
    snprintf(out, size, "%s", dir);
    if (run_owner != getpid()) {
        run_owner = getpid();
        atexit(run_dir_remove);
    }
    return true;
}

const char *sc_test_tmp_dir(const char *who)
{
    if (run_dir[0] != '\0') {
        return run_dir;
    }
    char base[sizeof(run_base)];
    if (!pick_base(base, sizeof(base))) {
        fprintf(stderr,
                "%s: no directory to make files in ($TMPDIR, $TEMP, $TMP, "
                "/tmp, /var/tmp, /usr/tmp, the working directory)\n",
                who);
        return NULL;
    }
    if (!make_run_dir(who, base, run_dir, sizeof(run_dir))) {
        run_dir[0] = '\0';
        return NULL;
    }
    memcpy(run_base, base, sizeof(run_base));
    return run_dir;
}

const char *sc_test_tmp_short_dir(const char *who, size_t max)
{
    const char *dir = sc_test_tmp_dir(who);
    if (dir != NULL && strlen(dir) < max) {
        return dir;
    }
    if (short_dir[0] == '\0' &&
        !make_run_dir(who, "/tmp", short_dir, sizeof(short_dir))) {
        short_dir[0] = '\0';
        return NULL;
    }
    if (strlen(short_dir) >= max) {
        fprintf(stderr, "%s: no directory of under %zu bytes (%s)\n", who, max,
                short_dir);
        return NULL;
    }
    return short_dir;
}

int sc_test_tmp_keep(const char *who, const char *path, char *out, size_t size)
{
    char kept[sizeof(run_base) + 32];
    const char *name = strrchr(path, '/');
    name = name == NULL ? path : name + 1;
    if (run_base[0] == '\0' ||
        snprintf(kept, sizeof(kept), "%s/semcache-kept.XXXXXX", run_base) >=
            (int)sizeof(kept)) {
        fprintf(stderr, "%s: cannot keep %s: no run directory\n", who, path);
        return -1;
    }
    if (mkdtemp(kept) == NULL) {
        fprintf(stderr, "%s: cannot keep %s: %s: %s\n", who, path, kept,
                strerror(errno));
        return -1;
    }
    if (snprintf(out, size, "%s/%s", kept, name) >= (int)size ||
        rename(path, out) != 0) {
        fprintf(stderr, "%s: cannot keep %s in %s: %s\n", who, path, kept,
                strerror(errno));
        rmdir(kept);
        return -1;
    }
    return 0;
}

char *sc_test_tmp_path(const char *who, char *buf, size_t size,
                       const char *name)
{
    const char *dir = sc_test_tmp_dir(who);
    if (dir == NULL) {
        exit(1);
    }
    if (snprintf(buf, size, "%s/%s", dir, name) >= (int)size) {
        fprintf(stderr, "%s: %s/%s: too long a path\n", who, dir, name);
        exit(1);
    }
    return buf;
}
