/* test_tmp.h - the C tests' temporary files: one directory per test
 * process, BASE/semcache-run.PID.XXXXXX, removed with all in
 * it when the process exits, by the rules of the Python tests'
 * clients/python/testtmp.py, so that each sweeps the other's.
 *
 * A process killed (SIGKILL: ctest's time-out; a crash) cannot remove its
 * directory. The next test process to make its own removes every one whose
 * process is gone: no process has its pid, and its flock (taken on the
 * directory by its process, held until that exits) is free. A live run's
 * directory is never removed; a pid taken again by another process only
 * keeps a dead one's until that one ends too; another user's is never
 * removed (even by root). A sweep removes through descriptors, following
 * no link (see sc_test_tmp_remove()). A directory is made as
 * .semcache-new.PID.XXXXXX, locked, then renamed: no sweep finds a run
 * directory unlocked. A sweep removes such a .semcache-new.PID.* by the
 * same rules (one left by a crash before its rename); one it takes from
 * an owner in another pid namespace before that locks it, the owner
 * finds gone and makes again.
 *
 * BASE is Python's tempfile.gettempdir(): the first of $TMPDIR, $TEMP,
 * $TMP, /tmp, /var/tmp, /usr/tmp and the working directory where a file
 * can be made. Paths up to 4095 bytes; ipc:// socket paths (108 bytes at
 * most) take sc_test_tmp_short_dir(). */
#ifndef SC_TEST_TMP_H
#define SC_TEST_TMP_H

#include <stddef.h>

/* This process's directory, made on the first call (after the sweep of
 * those whose process is gone) and removed, with all in it, at exit (not
 * by a fork's exit). The string is the helper's, valid until exit. NULL,
 * said on stderr after "who: ", when it cannot be made. */
const char *sc_test_tmp_dir(const char *who);

/* sc_test_tmp_dir()'s when it is under max bytes long; else a second
 * directory of this process's, /tmp/semcache-run.PID.XXXXXX, by the same
 * rules (removed at exit, swept after a SIGKILL): for ipc:// socket
 * paths, which cannot be longer than 107 bytes. NULL, said on stderr
 * after "who: ", when neither is or can be made. */
const char *sc_test_tmp_short_dir(const char *who, size_t max);

/* "DIR/name" into buf (DIR: sc_test_tmp_dir()'s). When there is no
 * directory or the path does not fit, the process exits 1, saying why
 * after "who: ". Returns buf. */
char *sc_test_tmp_path(const char *who, char *buf, size_t size,
                       const char *name);

/* Removes path and all in it (no shell: any name is safe). Through
 * descriptors: path's last name is opened from its parent's directory and
 * each subdirectory from its parent's, and each name removed relative to
 * its directory, never following a link, so that a directory in it
 * swapped for a link meanwhile takes nothing outside with it; path's
 * parent is followed as given (a link in path's last name is removed,
 * not followed, trailing slashes or not). Any depth: a few descriptors
 * at once, whatever the depth (the way back up is "..", checked to be the
 * directory it came down from). A directory it may not read (mode 000)
 * is removed when it is empty, and left, said, when it is not. For a
 * directory made in sc_test_tmp_dir()'s before the exit; the exit and
 * the sweep remove theirs so, bench_service its data directories. 0
 * when path is gone (or was not there); -1 with errno set, said on
 * stderr ("test_tmp: cannot remove PATH: [WHERE: ]why"), when some of
 * it is left, or when path is "/" or its last name "." or ".."
 * (refused: EINVAL). */
int sc_test_tmp_remove(const char *path);

/* Moves path (a directory in sc_test_tmp_dir()'s) out of it, into a new
 * directory BASE/semcache-kept.XXXXXX (BASE: where the run directory
 * is), which neither the exit nor a sweep removes: a failed run's logs
 * for the person or CI that reads them. Its new path into out; 0, or -1,
 * said on stderr after "who: ", when it cannot (path then stays where
 * it is, to go at the exit). */
int sc_test_tmp_keep(const char *who, const char *path, char *out, size_t size);

/* Removes the directories of base named semcache-run.PID.* or
 * .semcache-new.PID.* whose process is gone (see above) and whose owner
 * is this process's effective uid (another user's is kept, even by
 * root), through the descriptor it locked (as sc_test_tmp_remove());
 * returns how many it removed (one left in part, said on stderr, is not
 * counted). The sweep sc_test_tmp_dir() makes; for
 * tests of this helper. */
int sc_test_tmp_sweep(const char *base);

/* Removes the ipc:// sockets tests and benchmarks left in /tmp before
 * their sockets moved into the run directory (a killed run's stayed for
 * good): in dir, the names test_e2e_{nobody,silent,fake,oom}_PID.ipc,
 * bench-service-PID.ipc, bench-echo-PID.ipc, bench-hitrate-PID.ipc,
 * semcache-e2e-PID.ipc,
 * test-dispatch-[{cap,leave,undo,total,unread}-]PID.ipc and
 * semcache-cli-test-PID[-2|-3|-b].ipc whose process is gone
 * (they had no lock), that are sockets (a link of that name is neither
 * followed nor removed), whose owner is this process's effective uid and
 * to which a connect() is refused (ECONNREFUSED: no listener; from
 * another pid namespace, a container sharing /tmp, the pid alone would
 * call a live run's socket dead). Returns how many it removed. Run on
 * sc_test_tmp_old_sockets_dir by the sweep sc_test_tmp_dir() and
 * sc_test_tmp_short_dir() make: when a test or benchmark first asks for
 * its run directory (one that makes no file never sweeps); dir given
 * for tests of it. */
int sc_test_tmp_sweep_old_sockets(const char *dir);

/* Where the sweep sc_test_tmp_dir() makes looks for those old sockets:
 * "/tmp"; a test of it sets a directory of its own. */
extern const char *sc_test_tmp_old_sockets_dir;

/* For tests of this helper: when set, called with the path of each
 * .semcache-new.PID.XXXXXX directory just made, before it is opened and
 * locked (test_ctmp removes it there, as a sweep from another pid
 * namespace could). NULL by default. */
extern void (*sc_test_tmp_new_hook)(const char *path);

/* For tests of this helper: when set, called by sc_test_tmp_remove() (and
 * so by a sweep and at exit) with the path of each directory it has
 * opened, before it removes what is in it (test_ctmp swaps a directory
 * above it for a link there, as a process racing a sweep could). NULL by
 * default. */
extern void (*sc_test_tmp_remove_hook)(const char *path);

#endif
