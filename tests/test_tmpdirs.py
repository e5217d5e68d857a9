#!/usr/bin/python3
"""test_tmpdirs.py

The tests' temporary directories, one per test process
(clients/python/testtmp.py, and the C tests' tests/test_tmp.h through
the holder test_ctmp): a process's files are in its directory,
$TMPDIR/semcache-run.PID.XXXXXX; it goes at a normal exit and, for
Python, on SIGTERM; one left by a SIGKILL is removed by the next test
process to start, Python or C, while the directory of a live process, or
of a dead pid whose lock is held, is kept; so is a killed C test's while
a child it forked runs. A .semcache-new.PID.* left by a crash before its
rename is swept by the same rules, and an owner whose new directory is
swept before it locks it makes another. A C sweep removes through
descriptors: a directory swapped for a link while it removes in it
takes nothing outside with it; another uid's run directory is kept
(tested as root); a link named with a trailing slash is removed, not
its target's files; a tree 600 deep goes whole with 256 descriptors; a
directory moved out from under a sweep stops it, said and not counted;
an empty directory of mode 000 is removed, one that is not is left and
said ("cannot remove PATH: WHERE: why"). test_cli.sh is locked while it
runs and, its first directory swept before it locks it, makes another,
in bash's POSIX mode too. With --persist PATH, a real C
test (test_persist) killed midway leaves nothing the next one does not
remove (it used to leave /tmp/semcache-persist-test-PID). C picks the
base Python does when TMPDIR cannot be used ($TEMP, $TMP, /tmp...), and
a long TMPDIR gives ipc:// sockets a short directory under /tmp. With
--config TEST_CONFIG, test_config run with a TMPDIR holding quotes
removes its directory and nothing beside it (it used a shell's "rm
-rf"). With --bench
BENCH --server SEMCACHED, bench_service's --restart and --proxy, run with
a TMPDIR holding a space and quotes, remove their data directories and
nothing beside them (they used to through a shell's "rm -rf"), and a
failed soak's log, and a failed restart's, outlives bench_service's
exit, moved out of its run directory to $TMPDIR/semcache-kept.XXXXXX
(a failed restart stops the semcached it started again, too; one
whose semcached dies in the snapshot mode's wait says so at once), and
its ipc:// sockets are in its run directory: kept while it runs, swept
once it is killed (they were in /tmp, where no sweep looked; a C
sweep removes the old names' stale sockets there now).
Prints "N passed, N failed" last; exits 1 on a failure."""
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.join(HERE, "..", "clients", "python")
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, PYDIR)
import test_semcache  # noqa: E402 (it makes this process's directory)
import testtmp  # noqa: E402
from test_semcache import check  # noqa: E402

# A Python holder: its directory (testtmp.use(), after the sweep) and a
# directory made by tempfile, on one line; holds them until its stdin
# closes. With "semcache": as the tests have it, by importing
# test_semcache alone.
HOLDER = """
import os, sys, tempfile
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import testtmp
if sys.argv[2] == "semcache":
    import test_semcache
    run = testtmp.run_dir()  # test_semcache's tempfile.tempdir, if it set it
elif sys.argv[2] == "swept":  # its first new directory swept unlocked
    import shutil
    def sweep_first(path):
        testtmp._new_hook = None
        shutil.rmtree(path)
    testtmp._new_hook = sweep_first
    run = testtmp.use()
elif sys.argv[2] == "short":
    testtmp.use()
    run = testtmp.short_dir(60)
else:
    run = testtmp.use()
d = tempfile.mkdtemp()
open(os.path.join(d, "file"), "w").close()
print(run, d, flush=True)
sys.stdin.read()
"""


def env_in(base):
    return dict(os.environ, TMPDIR=base)


def py_holder(base, how="testtmp", env=None):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, PYDIR, how],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env or env_in(base))
    return proc, proc.stdout.readline().split()


def c_holder(ctmp, base, args=(), env=None, start_new_session=False):
    proc = subprocess.Popen([ctmp, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env=env or env_in(base),
                            start_new_session=start_new_session)
    return proc, proc.stdout.readline().split()


def kill(proc, sig=signal.SIGKILL):
    proc.send_signal(sig)
    proc.wait(30)


def group_gone(pgid, timeout=60):
    """Waits until no process of the group pgid runs (a zombie holds no
    file, so no lock: this box's pid 1 may be slow to reap the orphans);
    whether none does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = False
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    # After "(comm)": state, ppid, pgrp.
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                running = True
                break
        if not running:
            return True
        time.sleep(0.01)
    return False


def kill_group(proc):
    """Kills proc's process group (started with start_new_session: a
    test_cli.sh or bench_service with its stand-ins); waits until they
    are gone (their lock let go)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # (all gone already)
    proc.wait(30)
    group_gone(proc.pid)


def release(proc):
    proc.stdin.close()
    proc.wait(30)


def runs(base):
    return sorted(n for n in os.listdir(base)
                  if n.startswith(testtmp.PREFIX))


def mine(base, proc):
    """The run directories of base named with proc's pid."""
    return [n for n in runs(base)
            if n.startswith(f"{testtmp.PREFIX}{proc.pid}.")]


def write_script(path, text):
    """Writes a stand-in program at path, executable; path."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def stand_in_base(script, name="server.sh"):
    """A fresh directory holding runs/, the $TMPDIR of the run under
    test, and the stand-in script as name: (base, runs_base, its
    path)."""
    base = tempfile.mkdtemp()
    runs_base = os.path.join(base, "runs")
    os.mkdir(runs_base)
    return base, runs_base, write_script(os.path.join(base, name), script)


def wait_mark(mark, proc, timeout=30):
    """What a stand-in wrote to mark once it has (while proc runs, for up
    to timeout seconds); "" if it did not."""
    deadline = time.monotonic() + timeout
    while (not os.path.exists(mark) and proc.poll() is None and
           time.monotonic() < deadline):
        time.sleep(0.01)
    return open(mark).read() if os.path.exists(mark) else ""


def run_timed(cmd, env, timeout):
    """subprocess.run's result; a run killed at timeout is one with the
    return code "timed out" (said as a failure) and what it wrote."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, "timed out",
                                           (e.stdout or b"").decode(),
                                           (e.stderr or b"").decode())


def test_python_and_c(ctmp):
    base = tempfile.mkdtemp()
    # This process's own temporary files are in its run directory.
    check(os.path.basename(os.path.dirname(base)).startswith(
        f"{testtmp.PREFIX}{os.getpid()}."),
        f"this test's mkdtemp() lies in its run directory: {base}")

    # A Python test killed: its directory stays, for now.
    kp, kline = py_holder(base, "semcache")
    check(len(kline) == 2 and kline[0] == os.path.dirname(kline[1]) and
          os.path.basename(kline[0]).startswith(
              f"{testtmp.PREFIX}{kp.pid}.") and
          os.path.dirname(kline[0]) == base,
          f"importing test_semcache puts tempfile's files in "
          f"{base}/{testtmp.PREFIX}{kp.pid}.*: {kline}")
    kill(kp)
    check(kline and os.path.exists(kline[0]),
          f"SIGKILL leaves the directory: {runs(base)}")
    # A dead pid's whose lock is held (its owner in another pid
    # namespace, or a sweep beside): kept by every sweep.
    dead = os.path.join(base, f"{testtmp.PREFIX}{kp.pid}.held")
    os.mkdir(dead)
    fd = os.open(dead, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)

    # A live process's holding no lock (made before its owner locked it,
    # as test_cli.sh's were): kept by its pid alone.
    live = os.path.join(base, f"{testtmp.PREFIX}{os.getpid()}.nolock")
    os.mkdir(live)

    # The next C test starting removes it.
    lc, lcline = c_holder(ctmp, base)
    check(len(lcline) == 1 and os.path.basename(lcline[0]).startswith(
        f"{testtmp.PREFIX}{lc.pid}.") and
        os.path.exists(os.path.join(lcline[0], "file")),
        f"the C helper's directory is {base}/{testtmp.PREFIX}{lc.pid}.*: "
        f"{lcline}")
    check(kline and not os.path.exists(kline[0]) and os.path.exists(dead) and
          os.path.exists(live),
          f"a C test starting removes the killed Python run's directory, "
          f"not the held one nor a live process's unlocked one: "
          f"{runs(base)}")

    # A C test killed: the next Python test starting removes its.
    kc, kcline = c_holder(ctmp, base)
    kill(kc)
    check(kcline and os.path.exists(kcline[0]),
          f"SIGKILL leaves the C test's directory: {runs(base)}")
    lp, lpline = py_holder(base)
    check(kcline and not os.path.exists(kcline[0]),
          f"a Python test starting removes the killed C run's directory: "
          f"{runs(base)}")
    check(lcline and lpline and os.path.exists(lcline[0]) and
          os.path.exists(lpline[0]) and os.path.exists(dead) and
          os.path.exists(live),
          f"and keeps the live runs', the held one and the live process's "
          f"unlocked one: {runs(base)}")
    os.rmdir(live)
    np_, npline = py_holder(base)
    release(np_)
    check(npline and not os.path.exists(npline[0]),
          f"a Python test's directory goes at its exit: {runs(base)}")

    # The next C process sweeps too; a Python one's goes on SIGTERM.
    kp2, k2line = py_holder(base)
    kill(kp2)
    out = subprocess.run([ctmp, "sweep", base], capture_output=True,
                         text=True, env=env_in(base)).stdout.strip()
    check(out == "1" and not os.path.exists(k2line[0]) and
          os.path.exists(dead) and os.path.exists(lpline[0]) and
          os.path.exists(lcline[0]),
          f"a C test's sweep removes the killed Python run's only: {out}, "
          f"{runs(base)}")
    kill(lp, signal.SIGTERM)
    check(not os.path.exists(lpline[0]),
          f"a Python test's directory goes on SIGTERM: {runs(base)}")
    release(lc)
    check(not os.path.exists(lcline[0]),
          f"a C test's directory goes at its exit: {runs(base)}")

    # A C test killed while a child of its runs (a child of system()
    # between its fork and its exec, say): the child holds the lock, so
    # its directory stays until the child is gone too.
    fk, fkline = c_holder(ctmp, base, args=["fork"],
                          start_new_session=True)
    kill(fk)
    kept = testtmp.sweep(base)
    check(fkline and os.path.exists(fkline[0]) and kept == 0,
          f"a killed C test's directory is kept while its fork runs: "
          f"{kept} removed, {runs(base)}")
    os.killpg(fk.pid, signal.SIGKILL)
    check(group_gone(fk.pid) and testtmp.sweep(base) == 1 and
          fkline and not os.path.exists(fkline[0]),
          f"and removed once that is gone too: {runs(base)}")
    fk.stdin.close()

    # The lock let go: the dead pid's goes at the next sweep.
    os.close(fd)
    check(testtmp.sweep(base) == 1 and runs(base) == [],
          f"a dead pid's directory whose lock is free removed: "
          f"{runs(base)}")
    shutil.rmtree(base, ignore_errors=True)


def test_bases(ctmp):
    """C picks the base Python's tempfile.gettempdir() does: with TMPDIR
    a directory that does not exist, $TEMP, $TMP, then /tmp (C failed:
    "cannot make a directory in /nonexistent"); and a TMPDIR too long for
    ipc:// socket paths gives them a short directory under /tmp."""
    base = tempfile.mkdtemp()
    gone = os.path.join(base, "nonexistent")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TMPDIR", "TEMP", "TMP")}
    for extra, want in (({"TEMP": base}, base),
                        ({"TMP": base}, base),
                        ({}, None)):
        e = dict(env, TMPDIR=gone, **extra)
        pp, pline = py_holder(base, env=e)
        cp, cline = c_holder(ctmp, base, env=e)
        pbase = os.path.dirname(pline[0]) if pline else None
        cbase = os.path.dirname(cline[0]) if cline else None
        check(pbase is not None and cbase == pbase and
              (want is None or cbase == want) and
              os.path.exists(os.path.join(cline[0], "file")),
              f"TMPDIR={gone} {extra}: C's base is Python's "
              f"({cbase} vs {pbase})")
        release(pp)
        release(cp)
        check(cline and pline and not os.path.exists(cline[0]) and
              not os.path.exists(pline[0]),
              f"and both go at the exit: {cline} {pline}")

    long_base = os.path.join(base, "x" * 60)
    os.mkdir(long_base)
    sp, sline = c_holder(ctmp, long_base, args=["short", "60"])
    check(len(sline) == 1 and len(sline[0]) < 60 and
          sline[0].startswith(f"/tmp/{testtmp.PREFIX}{sp.pid}.") and
          os.path.exists(os.path.join(sline[0], "file")),
          f"a TMPDIR of {len(long_base)} bytes: ipc:// sockets get a "
          f"directory of under 60 bytes, /tmp/{testtmp.PREFIX}PID.*: "
          f"{sline}")
    release(sp)
    check(sline and not os.path.exists(sline[0]) and runs(long_base) == [],
          f"it goes at the exit: {sline} {runs(long_base)}")
    pp, pline = py_holder(long_base, "short")
    check(len(pline) == 2 and len(pline[0]) < 60 and
          pline[0].startswith(f"/tmp/{testtmp.PREFIX}{pp.pid}."),
          f"and in Python, testtmp.short_dir(60): {pline}")
    release(pp)
    check(pline and not os.path.exists(pline[0]) and runs(long_base) == [],
          f"it goes at the exit: {pline} {runs(long_base)}")
    shutil.rmtree(base, ignore_errors=True)


def test_new_leftovers(ctmp):
    """A .semcache-new.PID.* directory (made before it is locked and
    named) left by a crash before its rename is removed by the next
    sweep, C or Python, once its pid is gone and its lock free (it was
    never swept); a live pid's, or a dead pid's whose lock is held, is
    kept. One swept before its owner locked it (a sweep that misread the
    owner's pid from another pid namespace) makes the owner make another:
    it still gets a run directory, C and Python."""
    base = tempfile.mkdtemp()
    gone = subprocess.Popen(["true"])
    gone.wait()
    new = testtmp.NEW_PREFIX

    def leftover(name):
        path = os.path.join(base, name)
        os.mkdir(path)
        open(os.path.join(path, "file"), "w").close()
        return path

    def news():
        return sorted(n for n in os.listdir(base) if n.startswith(new))

    dead_c = leftover(f"{new}{gone.pid}.AbC123")
    dead_py = leftover(f"{new}{gone.pid}.xyz_1234")
    live = leftover(f"{new}{os.getpid()}.LiVe12")
    held = leftover(f"{new}{gone.pid}.HeLd12")
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    odd = leftover(f"{new}x{gone.pid}.AbC123")  # no pid: not ours
    out = subprocess.run([ctmp, "sweep", base], capture_output=True,
                         text=True, env=env_in(base)).stdout.strip()
    check(out == "2" and news() == sorted(
        os.path.basename(p) for p in (live, held, odd)),
        f"a C sweep removes the dead pid's {new}PID.* left by a crash, "
        f"keeps a live pid's, a held one and one of no pid: {out}, "
        f"{news()}")
    dead2 = leftover(f"{new}{gone.pid}.ZZzz9999")
    n = testtmp.sweep(base)
    check(n == 1 and not os.path.exists(dead2) and os.path.exists(live) and
          os.path.exists(held),
          f"and a Python sweep the same: {n}, {news()}")
    os.close(fd)
    check(testtmp.sweep(base) == 1 and not os.path.exists(held),
          f"the held one goes once its lock is free: {news()}")
    check(not os.path.exists(dead_c) and not os.path.exists(dead_py),
          f"both dead ones gone: {news()}")
    shutil.rmtree(live)
    shutil.rmtree(odd)

    # Its new directory swept before it locked it: the owner makes
    # another, C and Python.
    for who, (proc, line) in (("C", c_holder(ctmp, base, args=["swept"])),
                              ("Python", py_holder(base, "swept"))):
        ok = (len(line) >= 1 and os.path.dirname(line[0]) == base and
              os.path.basename(line[0]).startswith(
                  f"{testtmp.PREFIX}{proc.pid}.") and
              os.path.isdir(line[0]))
        check(ok and news() == [],
              f"{who}: its {new}PID.* swept before it is locked, it makes "
              f"another: {line}, {runs(base)} {news()}")
        release(proc)
    check(runs(base) == [] and news() == [],
          f"and both go at the exit: {runs(base)} {news()}")
    shutil.rmtree(base, ignore_errors=True)


def test_sweep_links(ctmp):
    """A sweep removes a dead run's directory through descriptors, never
    by path: a subdirectory swapped for a link to an outside directory
    while the C sweep works in it (through test_ctmp's hook, between its
    opening the directory and removing what is in it) leaves the outside
    directory's files alone (nftw's removal by path, which followed the
    link, took all 64). As root, a dead pid's run directory owned by
    another uid is kept by a C sweep, then by a Python one (each removed
    it)."""
    base = tempfile.mkdtemp()
    gone = subprocess.Popen(["true"])
    gone.wait()
    runs_base = os.path.join(base, "runs")
    victim = os.path.join(base, "victim")
    names = [f"f{i}" for i in range(64)]
    os.makedirs(os.path.join(victim, "b"))
    run = os.path.join(runs_base, f"{testtmp.PREFIX}{gone.pid}.evil")
    os.makedirs(os.path.join(run, "a", "b"))
    for d in (os.path.join(victim, "b"), os.path.join(run, "a", "b")):
        for n in names:
            open(os.path.join(d, n), "w").close()
    out = subprocess.run([ctmp, "sweep", runs_base,
                          os.path.join(run, "a", "b"), victim],
                         capture_output=True, text=True,
                         env=env_in(base)).stdout.split()
    left = sorted(os.listdir(os.path.join(victim, "b"))) \
        if os.path.isdir(os.path.join(victim, "b")) else []
    check(out == ["1", "swapped"] and left == sorted(names),
          f"a C sweep whose directory is swapped for a link to {victim} "
          f"while it removes in it leaves {victim}/b alone: {out}, "
          f"{len(left)} of {len(names)} files left")
    shutil.rmtree(run, ignore_errors=True)

    if os.geteuid() != 0:
        print("tmpdirs: not root: the other uid's directory is not tested")
    else:
        other = os.path.join(runs_base, f"{testtmp.PREFIX}{gone.pid}.other")
        os.mkdir(other)
        open(os.path.join(other, "file"), "w").close()
        os.chown(other, 65534, 65534)
        out = subprocess.run([ctmp, "sweep", runs_base], capture_output=True,
                             text=True, env=env_in(base)).stdout.strip()
        check(out == "0" and os.path.exists(os.path.join(other, "file")),
              f"a dead pid's run directory owned by uid 65534 is kept by a "
              f"root's C sweep: {out}, {sorted(os.listdir(runs_base))}")
        n = testtmp.sweep(runs_base)
        check(n == 0 and os.path.exists(os.path.join(other, "file")),
              f"and by a root's Python sweep: {n}, "
              f"{sorted(os.listdir(runs_base))}")
    shutil.rmtree(base, ignore_errors=True)


def as_nobody():
    os.setgroups([])  # root's extra groups (0, often) would stay
    os.setgid(65534)
    os.setuid(65534)


def open_to_all(d):
    """Lets every user search the way to d (the dirs root owns on it)."""
    while d not in ("/", ""):
        st = os.stat(d)
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            os.chmod(d, (st.st_mode & 0o7777) | 0o011)
        d = os.path.dirname(d)


def nobody_tree(top, dirs, files=(), locked=()):
    """Makes top/dirs..., top/files... owned by uid 65534 (by this user
    when not root), then the dirs of locked mode 000 (deepest first)."""
    os.makedirs(top)
    for d in dirs:
        os.makedirs(os.path.join(top, d), exist_ok=True)
    for f in files:
        open(os.path.join(top, f), "w").close()
    if os.geteuid() == 0:
        for dp, dn, fn in os.walk(top):
            for n in [dp] + [os.path.join(dp, x) for x in dn + fn]:
                os.chown(n, 65534, 65534)
    for d in sorted(locked, key=len, reverse=True):
        os.chmod(os.path.join(top, d), 0)


def test_remove_edges(ctmp):
    """sc_test_tmp_remove() given a link with a trailing slash removes the
    link, not what is in its target (open() follows "link/" even with
    O_NOFOLLOW: it removed the target's files), and refuses a last name
    "." or "..". A tree 600 directories deep is removed whole
    with 256 descriptors, by sc_test_tmp_remove() and by a sweep (two
    descriptors held a level: EMFILE from ~510 deep, the tree left and
    the sweep still counted it). A directory moved out of the tree while
    the sweep removes in it stops the sweep there (its ".." is no longer
    the directory it came down from), leaves what is beside it alone, is
    said on stderr and not counted."""
    base = tempfile.mkdtemp()
    outside = os.path.join(base, "outside")
    os.mkdir(outside)
    open(os.path.join(outside, "precious"), "w").close()
    link = os.path.join(base, "lnk")
    for tail in ("/", "//"):
        if os.path.lexists(link):
            os.unlink(link)
        open(os.path.join(outside, "precious"), "w").close()
        os.symlink("outside", link)
        r = subprocess.run([ctmp, "remove", link + tail],
                           capture_output=True, text=True, env=env_in(base))
        check(r.stdout.strip() == "0" and not os.path.lexists(link) and
              os.listdir(outside) == ["precious"],
              f"removing {link}{tail} removes the link and keeps "
              f"{outside}/precious: {r.stdout.strip()} "
              f"{os.path.lexists(link)} {os.listdir(outside)} {r.stderr}")
    if not os.path.lexists(link):  # (the old code's left it)
        os.symlink("outside", link)
    precious = os.path.join(outside, "precious")
    # (Not "/" itself: refused too, but a regression there, as root,
    # would remove the machine's files.)
    for path in (link + "/.", os.path.join(outside, "sub", "..")):
        os.makedirs(os.path.join(outside, "sub"), exist_ok=True)
        open(precious, "w").close()
        r = subprocess.run([ctmp, "remove", path], capture_output=True,
                           text=True, env=env_in(base))
        check(r.stdout.strip() == "-1" and "cannot remove" in r.stderr and
              os.path.exists(precious),
              f"removing {path} is refused: {r.stdout.strip()} "
              f"{r.stderr.strip()}, precious "
              f"{'kept' if os.path.exists(precious) else 'REMOVED'}")
    os.unlink(link)

    if os.geteuid() != 0:
        print("tmpdirs: not root: a base that cannot be read is not tested")
    else:
        # A base uid 65534 may write and search but not read (a drop
        # directory, 1733): its own directory in it is removed (the
        # parent opened for reading left it, "Permission denied").
        drop = os.path.join(base, "drop")
        os.mkdir(drop)
        open_to_all(base)
        os.chmod(drop, 0o1733)
        mine = os.path.join(drop, "mine")
        nobody_tree(mine, [], ["file"])
        r = subprocess.run([ctmp, "remove", mine], capture_output=True,
                           text=True, env=env_in(base),
                           preexec_fn=as_nobody)
        check(r.stdout.strip() == "0" and not os.path.lexists(mine),
              f"uid 65534 removes its directory in a base it cannot read "
              f"(1733): {r.stdout.strip()} {r.stderr.strip()}")

    # 600 deep, a file at the top, one halfway and one at the bottom.
    gone = subprocess.Popen(["true"])
    gone.wait()
    deep = os.path.join(base, "deep")
    runs_base = os.path.join(base, "runs")
    os.mkdir(runs_base)
    few = ["sh", "-c", 'ulimit -n 256 && exec "$0" "$@"', ctmp]
    for top, args in ((deep, ["remove", deep]),
                      (os.path.join(runs_base,
                                    f"{testtmp.PREFIX}{gone.pid}.deep"),
                       ["sweep", runs_base])):
        os.mkdir(top)
        path = top
        for i in range(600):
            path = os.path.join(path, "d")
            os.mkdir(path)
            if i in (0, 299, 599):
                open(os.path.join(path, "f"), "w").close()
        r = subprocess.run(few + args, capture_output=True, text=True,
                           env=env_in(base))
        check(r.stdout.strip() in ("0", "1") and not os.path.lexists(top)
              and r.stderr == "",
              f"{args[0]} under ulimit -n 256 removes a tree 600 deep "
              f"whole: {r.stdout.strip()} "
              f"{'gone' if not os.path.lexists(top) else 'LEFT'} "
              f"{r.stderr.strip()[-300:]}")
        check(args[0] != "sweep" or r.stdout.strip() == "1",
              f"and the sweep counts it: {r.stdout.strip()}")
        shutil.rmtree(top, ignore_errors=True)

    # a/b moved to victim/b while the sweep is in it; a holds the names
    # victim does.
    victim = os.path.join(base, "victim")
    os.mkdir(victim)
    run = os.path.join(runs_base, f"{testtmp.PREFIX}{gone.pid}.moved")
    os.makedirs(os.path.join(run, "a", "b"))
    names = [f"f{i}" for i in range(64)]
    for d in (victim, os.path.join(run, "a"), os.path.join(run, "a", "b")):
        for n in names:
            open(os.path.join(d, n), "w").close()
    r = subprocess.run([ctmp, "sweep", runs_base,
                        os.path.join(run, "a", "b"),
                        os.path.join(victim, "b"), "move"],
                       capture_output=True, text=True, env=env_in(base))
    left = sorted(n for n in os.listdir(victim) if n != "b")
    check(r.stdout.split() == ["0", "swapped"] and left == sorted(names) and
          f"cannot remove {run}" in r.stderr and os.path.isdir(run),
          f"a sweep whose directory is moved out to {victim} while it "
          f"removes in it stops there, keeps {victim}'s files, says so "
          f"and does not count it: {r.stdout.strip()}, {len(left)} of "
          f"{len(names)} files left, {r.stderr.strip()[-300:]}")
    shutil.rmtree(base, ignore_errors=True)



def test_unreadable(ctmp):
    """As uid 65534 (root reads a directory of mode 000 all the same): an
    empty directory of mode 000 in a dead run's is removed by a sweep,
    and by sc_test_tmp_remove() in a tree and as the path given (all
    left, "Permission denied"); one that is not empty is left, and the
    run with it, each said in a "cannot remove" line naming the run and
    where (a sweep's not counted, a removal's -1); a path whose parent
    it may not write is left, said in one naming the path alone. Not
    root, the same as this user (where the bug showed: root reads mode
    000)."""
    root = os.geteuid() == 0
    demote = as_nobody if root else None
    base = tempfile.mkdtemp()
    if root:
        open_to_all(base)
        os.chmod(base, 0o777)
    gone = subprocess.Popen(["true"])
    gone.wait()

    def run_ctmp(*args):
        r = subprocess.run([ctmp, *args], capture_output=True, text=True,
                           env=env_in(base), preexec_fn=demote)
        return r.stdout.strip(), r.stderr.strip()

    empty = os.path.join(base, f"{testtmp.PREFIX}{gone.pid}.empty")
    nobody_tree(empty, ["sub/locked"], ["sub/f"], ["sub/locked"])
    out, err = run_ctmp("sweep", base)
    check(out == "1" and err == "" and not os.path.lexists(empty),
          f"a sweep removes a dead run holding an empty directory of mode "
          f"000: {out} {'LEFT' if os.path.lexists(empty) else 'gone'} {err}")
    tree = os.path.join(base, "tree")
    nobody_tree(tree, ["a/locked"], ["a/f"], ["a/locked"])
    out, err = run_ctmp("remove", tree)
    check(out == "0" and err == "" and not os.path.lexists(tree),
          f"so does sc_test_tmp_remove(): {out} {err}")
    alone = os.path.join(base, "alone")
    nobody_tree(alone, [], [], ["."])
    out, err = run_ctmp("remove", alone)
    check(out == "0" and err == "" and not os.path.lexists(alone),
          f"and given one itself: {out} {err}")

    full = os.path.join(base, f"{testtmp.PREFIX}{gone.pid}.full")
    nobody_tree(full, ["sub/locked"], ["sub/locked/f"], ["sub/locked"])
    line = (f"test_tmp: cannot remove {full}: "
            f"{full}/sub/locked: Permission denied")
    out, err = run_ctmp("sweep", base)
    check(out == "0" and err == line and os.path.isdir(full),
          f"a dead run holding a directory of mode 000 that is not empty "
          f"is kept, said and not counted: {out} {err!r}")
    out, err = run_ctmp("remove", full)
    check(out == "-1" and err == line and os.path.isdir(full),
          f"sc_test_tmp_remove() leaves it, saying so: {out} {err!r}")
    r = subprocess.run([sys.executable, "-c",
                        "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import testtmp; print(testtmp.sweep(sys.argv[2]))",
                        PYDIR, base], capture_output=True, text=True,
                       preexec_fn=demote)
    check(r.stdout.strip() == "0" and os.path.isdir(full),
          f"a Python sweep keeps it and does not count it (it counted "
          f"it): {r.stdout.strip()} {r.stderr.strip()[-200:]}")
    os.chmod(os.path.join(full, "sub", "locked"), 0o700)

    ro = os.path.join(base, "ro")
    os.mkdir(ro)  # root's: 65534 may not write in it
    nobody_tree(os.path.join(ro, "d"), [], ["f"])
    if not root:
        os.chmod(ro, 0o555)  # nor may this user
    out, err = run_ctmp("remove", os.path.join(ro, "d"))
    check(out == "-1" and err == f"test_tmp: cannot remove {ro}/d: "
          f"Permission denied" and os.path.isdir(os.path.join(ro, "d")),
          f"a directory in one it may not write is left, said: {out} "
          f"{err!r}")
    os.chmod(ro, 0o755)
    shutil.rmtree(base, ignore_errors=True)

CLI_SERVER = """#!/bin/sh
echo "$@" >"$CLI_MARK.tmp" && mv "$CLI_MARK.tmp" "$CLI_MARK"
exec cat >/dev/null
"""


# A stand-in mktemp for test_cli_posix(): the first directory it makes
# it removes before test_cli.sh can lock it, as a sweep from another pid
# namespace could; each call is a line in $MKTEMP_LOG.
SWEPT_MKTEMP = """#!/bin/sh
d=$("$REAL_MKTEMP" "$@") || exit 1
[ -s "$MKTEMP_LOG" ] || rmdir "$d"
echo "$d" >>"$MKTEMP_LOG"
echo "$d"
"""


def start_cli(base, env=None):
    """Starts test_cli.sh on a stand-in semcached that writes down its
    arguments and a stand-in CLI that waits (both on the test's stdin),
    with TMPDIR base/runs; its process, runs base and run directory
    (from the server's ipc:// address; "" when it did not start)."""
    server = write_script(os.path.join(base, "server.sh"), CLI_SERVER)
    cli = write_script(os.path.join(base, "cli.sh"),
                       "#!/bin/sh\nexec cat >/dev/null\n")
    runs_base = os.path.join(base, "runs")
    os.mkdir(runs_base)
    mark = os.path.join(base, "mark")
    proc = subprocess.Popen([os.path.join(HERE, "test_cli.sh"), server, cli],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(env or os.environ, TMPDIR=runs_base,
                                     CLI_MARK=mark))
    args = wait_mark(mark, proc).split()
    run = (os.path.dirname(args[1][len("ipc://"):])
           if len(args) > 1 and args[1].startswith("ipc://") else "")
    return proc, runs_base, run



def test_cli_lock():
    """test_cli.sh's run directory is locked while it runs (it held none:
    a sweep that misread its pid, from another pid namespace, removed it
    under it), and one left by a SIGKILL goes at the next sweep."""
    base = tempfile.mkdtemp()
    proc, runs_base, run = start_cli(base)
    locked = False
    if run and os.path.isdir(run):
        fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            locked = True
        os.close(fd)
    check(os.path.dirname(run) == runs_base and
          os.path.basename(run).startswith(f"{testtmp.PREFIX}{proc.pid}.") and
          locked,
          f"test_cli.sh's run directory, {runs_base}/{testtmp.PREFIX}"
          f"{proc.pid}.*, is locked while it runs: {run!r} "
          f"{'locked' if locked else 'NOT LOCKED'}")
    kill_group(proc)
    check(run and os.path.isdir(run) and testtmp.sweep(runs_base) == 1 and
          os.listdir(runs_base) == [],
          f"killed, it leaves it to the next sweep: "
          f"{os.listdir(runs_base)}")
    shutil.rmtree(base, ignore_errors=True)


def test_cli_posix():
    """test_cli.sh whose first new directory is swept before it locks it
    makes another and runs, in bash's POSIX mode too (POSIXLY_CORRECT in
    the environment): there a failed "exec 9<DIR" ended the script, status
    1, before its server started."""
    base = tempfile.mkdtemp()
    stub = os.path.join(base, "bin")
    os.mkdir(stub)
    write_script(os.path.join(stub, "mktemp"), SWEPT_MKTEMP)
    log = os.path.join(base, "mktemp.log")
    env = dict(os.environ, POSIXLY_CORRECT="1", MKTEMP_LOG=log,
               REAL_MKTEMP=shutil.which("mktemp"),
               PATH=stub + os.pathsep + os.environ.get("PATH", ""))
    proc, runs_base, run = start_cli(base, env)
    made = open(log).read().split() if os.path.exists(log) else []
    check(len(made) == 2 and os.path.dirname(run) == runs_base and
          os.path.isdir(run) and proc.poll() is None,
          f"in POSIX mode, test_cli.sh whose first directory is swept "
          f"makes another and runs: {len(made)} made, run {run!r}, "
          f"exit status {proc.poll()}")
    kill_group(proc)
    testtmp.sweep(runs_base)
    shutil.rmtree(base, ignore_errors=True)


def test_killed_c_test(persist):
    """test_persist killed once it has made its directory: the next test
    process leaves nothing of it. Killed with its process group, as
    ctest's time-out kills a test's process tree: a child of its
    system() between its fork and its exec still holds the directory's
    lock (its copy of the descriptor closes only at the exec), so a sweep
    right after a SIGKILL of test_persist alone kept it (1 run in 30 or
    so on a loaded machine; the next sweep removed it)."""
    base = tempfile.mkdtemp()
    proc = subprocess.Popen([persist], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env_in(base),
                            start_new_session=True)
    # Its directory once it has one (or its exit, when it makes none).
    deadline = time.monotonic() + 60
    while (proc.poll() is None and not mine(base, proc) and
           time.monotonic() < deadline):
        time.sleep(0.01)
    made = mine(base, proc)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it and its children all gone
    proc.wait(30)
    group_gone(proc.pid)
    check(len(made) == 1,
          f"test_persist makes its files in $TMPDIR/{testtmp.PREFIX}"
          f"{proc.pid}.*: {runs(base)}")
    testtmp.sweep(base)
    old = f"/tmp/semcache-persist-test-{proc.pid}"
    check(runs(base) == [] and not os.path.exists(old),
          f"nothing of the killed test_persist left after a sweep: "
          f"{runs(base)} {old if os.path.exists(old) else ''}")
    if os.path.exists(old):
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


def test_bench_names(bench, server):
    """bench_service removes its data directories without a shell: a
    TMPDIR of "a' 'b" (--soak) or "a b" (--proxy), where a shell's
    "rm -rf" read .../a and b/..., leaves .../a as it was."""
    base = tempfile.mkdtemp()
    canary = os.path.join(base, "a", "keep")
    os.mkdir(os.path.dirname(canary))
    open(canary, "w").close()
    # --soak 4 passes (its directory then removed; on a loaded machine it
    # may fail, keeping it out of the run directory); the proxy's run,
    # with no embedder table from this directory, may fail: either way
    # it removes its directory at its end.
    for name, args, codes in (("a' 'b", ["--soak", "4"], (0, 1)),
                              ("a b", ["--proxy", "--entries", "50",
                                       "--samples", "20"], (0, 1))):
        tdir = os.path.join(base, name)
        os.mkdir(tdir)
        r = subprocess.run([bench, *args, "--server", server],
                           capture_output=True, text=True, cwd=base,
                           env=env_in(tdir), timeout=120)
        check(r.returncode in codes and os.path.exists(canary) and
              runs(tdir) == [],
              f"bench_service {args[0]} with TMPDIR={tdir!r} removes its "
              f"directory only (rc {r.returncode}, {base}/a/keep "
              f"{'kept' if os.path.exists(canary) else 'REMOVED'}, left "
              f"{runs(tdir)}): {r.stderr[-300:]}")
    shutil.rmtree(base, ignore_errors=True)


def test_config_names(config):
    """A C test removes its directory without a shell: test_config run
    with a TMPDIR of "a' 'b", where "rm -rf '...'" read .../a and b/...,
    leaves .../a as it was (test_persist and test_restore_model remove
    theirs the same way, through sc_test_tmp_remove())."""
    base = tempfile.mkdtemp()
    canary = os.path.join(base, "a", "keep")
    os.mkdir(os.path.dirname(canary))
    open(canary, "w").close()
    tdir = os.path.join(base, "a' 'b")
    os.mkdir(tdir)
    r = subprocess.run([config], capture_output=True, text=True, cwd=base,
                       env=env_in(tdir), timeout=120)
    check(r.returncode == 0 and os.path.exists(canary) and
          runs(tdir) == [],
          f"test_config with TMPDIR={tdir!r} removes its directory only "
          f"(rc {r.returncode}, {base}/a/keep "
          f"{'kept' if os.path.exists(canary) else 'REMOVED'}, left "
          f"{runs(tdir)}): {r.stderr[-300:]}")
    shutil.rmtree(base, ignore_errors=True)


def test_bench_keeps(bench, server):
    """A failed soak (--soak 1: nothing has expired yet) keeps its
    directory, with semcached's log, past bench_service's exit: moved to
    $TMPDIR/semcache-kept.XXXXXX, out of the run directory that goes."""
    base = tempfile.mkdtemp()
    r = subprocess.run([bench, "--soak", "1", "--server", server],
                       capture_output=True, text=True, env=env_in(base),
                       timeout=120)
    said = [ln.split("semcached's log: ", 1)[1] for ln in
            r.stderr.splitlines() if "semcached's log: " in ln]
    log = said[0] if said else ""
    check(r.returncode == 1 and os.path.isfile(log) and
          os.path.basename(os.path.dirname(os.path.dirname(log))).startswith(
              "semcache-kept.") and
          os.path.dirname(os.path.dirname(os.path.dirname(log))) == base and
          runs(base) == [],
          f"a failed soak's log is kept past the exit, in "
          f"{base}/semcache-kept.*: rc {r.returncode}, {log!r} "
          f"{'exists' if os.path.isfile(log) else 'GONE'}, "
          f"{sorted(os.listdir(base))}")
    shutil.rmtree(base, ignore_errors=True)


# A stand-in semcached for --restart: the real one, but every second
# start (the restart) gets an empty data directory of its own, so that
# nothing is restored and the restart fails at once.
RESTART_SERVER = """#!/bin/sh
n=$(cat "$RS_COUNT" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" >"$RS_COUNT"
prev=
for a do
    shift
    orig=$a
    if [ "$prev" = --data-dir ] && [ $((n % 2)) = 0 ]; then
        a="$RS_EMPTY.$n"
        mkdir -p "$a"
    fi
    set -- "$@" "$a"
    prev=$orig
done
exec "$RS_REAL" "$@"
"""


def test_restart_keeps(bench, server):
    """A failed restart (--restart: its second starts, through a
    stand-in, get empty data directories: nothing restored) keeps each
    mode's directory, with semcached's log, past bench_service's exit:
    moved to $TMPDIR/semcache-kept.XXXXXX, out of the run directory that
    goes (969d848 did it; only the soak's was tested)."""
    base, runs_base, stand_in = stand_in_base(RESTART_SERVER)
    env = dict(env_in(runs_base), RS_REAL=os.path.abspath(server),
               RS_COUNT=os.path.join(base, "count"),
               RS_EMPTY=os.path.join(base, "empty"))
    # 1000 entries: a log past the snapshot mode's --compact-bytes (1 MiB,
    # the least semcached takes), which waits for a compaction.
    r = run_timed([bench, "--restart", "1000", "--server", stand_in], env,
                  240)
    said = [ln.split("restart: kept ", 1)[1].rsplit(" (", 1)[0]
            for ln in r.stderr.splitlines() if "restart: kept " in ln]
    logs = [os.path.join(d, "semcached.log") for d in said]
    kept_in = [os.path.dirname(os.path.dirname(d)) == runs_base and
               os.path.basename(os.path.dirname(d)).startswith(
                   "semcache-kept.") for d in said]
    starts = open(env["RS_COUNT"]).read().strip() \
        if os.path.exists(env["RS_COUNT"]) else "0"
    # A restarted semcached that restored too little was left running
    # (it held the address: the next modes could not listen, and the
    # snapshot mode waited 120 s for a compaction), past the exit.
    left = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if env["RS_EMPTY"].encode() in f.read():
                    left.append(int(pid))
        except (OSError, ValueError):
            continue
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    check(left == [] and starts == "6",
          f"each mode's semcached, restarts too, stopped by bench_service "
          f"(6 starts: {starts}; left running: {left})")
    check(r.returncode == 1 and len(said) == 3 and all(kept_in) and
          all(os.path.isfile(g) and os.path.getsize(g) > 0 for g in logs) and
          runs(runs_base) == [],
          f"a failed restart keeps each mode's directory, with its log, "
          f"past the exit, in {runs_base}/semcache-kept.*: rc "
          f"{r.returncode}, {starts} starts, {said} "
          f"{['exists' if os.path.isfile(g) else 'GONE' for g in logs]}, "
          f"{sorted(os.listdir(runs_base))}: {r.stderr[-300:]}")
    shutil.rmtree(base, ignore_errors=True)


# A stand-in semcached for --restart whose snapshot-mode start (the one
# given --compact-bytes 1048576) compacts never (the bench would wait its
# 120 s for a compaction) and is killed (SIGKILL) once its namespace
# holds all DK_N entries, as stats through semcache-cli shows: the fill
# done, the bench waiting, or a moment before its last answer is read.
# The other starts are the real semcached.
DEAD_SERVER = """#!/bin/bash
snap= url= prev= args=()
for a in "$@"; do
    if [ "$prev" = --compact-bytes ] && [ "$a" = 1048576 ]; then
        a=1099511627776
        snap=1
    fi
    if [ "$prev" = --listen ]; then url=$a; fi
    args+=("$a")
    prev=$a
done
if [ -z "$snap" ] || [ -e "$DK_DONE" ]; then exec "$DK_REAL" "$@"; fi
: >"$DK_DONE"
"$DK_REAL" "${args[@]}" &
s=$!
until "$DK_CLI" -a "$url" --json stats --ns restart 2>/dev/null |
        grep -q '"entries":'"$DK_N"','; do
    kill -0 "$s" 2>/dev/null || exit 3
    sleep 0.05
done
kill -KILL "$s"
wait "$s"
exit 9
"""


def test_restart_dead(bench, server):
    """bench_service --restart's snapshot mode: a semcached that dies
    during the fill or the wait for a compaction (a stand-in kills it once
    the fill is in, and lets no compaction run) ends the mode at once,
    said on one line ("semcached (pid N) exited (exit status 9) while
    waiting for a compaction"), the mode failed and its directory kept;
    the stop mode after it runs. It waited 120 s for a compaction with no
    check (the hang guard here, 100 s, is under it)."""
    base, runs_base, stand_in = stand_in_base(DEAD_SERVER)
    env = dict(env_in(runs_base), DK_REAL=os.path.abspath(server),
               DK_CLI=os.path.join(os.path.dirname(os.path.abspath(server)),
                                   "semcache-cli"),
               DK_DONE=os.path.join(base, "done"), DK_N="1000")
    r = run_timed([bench, "--restart", "1000", "--json", "--server",
                   stand_in], env, 100)
    said = [ln for ln in r.stderr.splitlines()
            if "restart: snapshot: semcached (pid " in ln]
    modes = {}
    for ln in r.stdout.splitlines():
        try:
            o = json.loads(ln)
            modes[o["state"]] = o["ok"]
        except (ValueError, KeyError, TypeError):
            continue
    check(r.returncode == 1 and len(said) == 1 and
          re.search(r"\) exited \(exit status 9\) (while waiting for|in "
                    r"the fill, before) a compaction: not restarted \(its log",
                    said[0]) is not None and
          modes == {"log": True, "snapshot": False, "stop": True} and
          runs(runs_base) == [],
          f"a semcached dead during the snapshot mode's wait ends it at "
          f"once, said: rc {r.returncode}, {said}, modes {modes}: "
          f"{r.stderr[-400:]}")
    shutil.rmtree(base, ignore_errors=True)


# A stand-in semcached that listens on its --listen ipc:// path (a plain
# Unix socket: bench_service's ping gets no answer and it goes on
# trying), writes that URL down and waits to be killed.
IPC_SERVER = """#!/usr/bin/python3
import os, socket, sys, time
a = sys.argv[1:]
url = a[a.index("--listen") + 1]
s = socket.socket(socket.AF_UNIX)
s.bind(url[len("ipc://"):])
s.listen()
mark = os.environ["IPC_MARK"]
with open(mark + ".tmp", "w") as f:
    f.write(url)
os.rename(mark + ".tmp", mark)
time.sleep(600)
"""


def test_ipc_swept(bench, ctmp):
    """bench_service's ipc:// sockets (the semcached it starts listens on
    one) are in its run directory, so that after a SIGKILL (ctest's
    time-out) the next sweep takes them, by the rules of the directories:
    a live run's kept, a dead one's removed, never through a link. They
    were /tmp/bench-service-PID.ipc and /tmp/bench-echo-PID.ipc, which
    no sweep looked at: each killed run left them for good (test_e2e's
    and bench_hitrate's moved alike). Seen through a stand-in semcached
    that binds the socket and waits; the C sweep (test_ctmp) and
    Python's each keep it while the run lives."""
    base, runs_base, stand_in = stand_in_base(IPC_SERVER, "server.py")
    mark = os.path.join(base, "mark")
    proc = subprocess.Popen([bench, "--restart", "1000", "--server",
                             stand_in], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(env_in(runs_base), IPC_MARK=mark))
    url = wait_mark(mark, proc)
    path = url[len("ipc://"):] if url.startswith("ipc://") else ""
    run = os.path.dirname(path)
    # Under a long $TMPDIR, bench_service's socket is in its second
    # directory, /tmp/semcache-run.PID.* (sc_test_tmp_short_dir()); /tmp
    # is then swept too (where other runs' dead directories may go as
    # well: its count is not checked).
    short = os.path.dirname(run) == "/tmp" and runs_base != "/tmp"
    bases = [runs_base] + (["/tmp"] if short else [])
    outs = [subprocess.run([ctmp, "sweep", b], capture_output=True,
                           text=True, timeout=30, env=env_in(runs_base))
            .stdout.strip() for b in bases]
    live_kept = (outs[0] == "0" and testtmp.sweep(runs_base) == 0 and
                 (not short or testtmp.sweep("/tmp") >= 0) and
                 os.path.exists(path))
    check(os.path.dirname(run) in bases and
          os.path.basename(run).startswith(f"{testtmp.PREFIX}{proc.pid}.")
          and live_kept,
          f"bench_service's ipc:// socket is in its run directory, "
          f"{runs_base}/{testtmp.PREFIX}{proc.pid}.* (or under a long "
          f"$TMPDIR /tmp/{testtmp.PREFIX}{proc.pid}.*), kept by a C and a "
          f"Python sweep while it runs: {path!r}, "
          f"{'kept' if live_kept else 'NOT KEPT'} ({outs})")
    kill_group(proc)
    outs = [subprocess.run([ctmp, "sweep", b], capture_output=True,
                           text=True, timeout=30, env=env_in(runs_base))
            .stdout.strip() for b in bases]
    check(path and not os.path.lexists(path) and
          not os.path.lexists(run) and outs[0] == "1" and
          runs(runs_base) == [],
          f"killed, its socket goes at the next sweep: {path!r} "
          f"{'LEFT' if path and os.path.lexists(path) else 'gone'}, "
          f"swept {outs}, {runs(runs_base)}")
    if path.startswith("/tmp/") and os.path.lexists(path):
        os.unlink(path)  # the old name's, for the failure's rerun
    shutil.rmtree(base, ignore_errors=True)


def test_old_sockets(ctmp):
    """The ipc:// sockets runs left in /tmp before they moved into the
    run directory (test_e2e_{nobody,silent,fake,oom}_PID.ipc,
    bench-service-, bench-echo-, bench-hitrate-PID.ipc) go at a C
    sweep (sc_test_tmp_sweep_old_sockets(), on /tmp at the start of each
    C test that makes a run directory; here on a directory of the
    test's): one whose pid is gone,
    ours, a socket a connect() to which is refused; kept: one whose
    process lives, a live listener's whose pid reads as gone (as from
    another pid namespace: it was removed before), a link of such a name
    (not followed: the socket it points to stays too), a plain file of
    such a name, a name that only looks like one, and, as root, a
    socket of uid 65534. Nothing removed them before (no sweep looked).
    The sockets are made in a short directory (testtmp.short_dir()):
    under a long $TMPDIR their paths would pass sun_path's 107 bytes."""
    base = tempfile.mkdtemp(dir=testtmp.short_dir(50))
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = os.getpid()

    def sock(path):
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()  # the file stays, as a killed listener's

    gone = [f"bench-service-{dead.pid}.ipc", f"test_e2e_oom_{dead.pid}.ipc",
            f"bench-hitrate-{dead.pid}.ipc"]
    for name in gone:
        sock(os.path.join(base, name))
    kept = [f"bench-echo-{live}.ipc", f"test_e2e_fake_{dead.pid}.ipc.x",
            f"test_e2e_silent_{dead.pid}x.ipc"]
    for name in kept:
        sock(os.path.join(base, name))
    # A live listener under a name whose pid is gone, as a run in another
    # pid namespace (a container sharing /tmp) reads: a connect() to it
    # is not refused, so it stays.
    listening = f"test_e2e_silent_{dead.pid}.ipc"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(base, listening))
    listener.listen(16)
    kept.append(listening)
    outside = os.path.join(base, "outside")
    os.mkdir(outside)
    target = os.path.join(outside, "target.ipc")
    sock(target)
    link = f"test_e2e_nobody_{dead.pid}.ipc"
    os.symlink(target, os.path.join(base, link))
    plain = f"bench-echo-{dead.pid}.ipc"
    open(os.path.join(base, plain), "w").close()
    kept += [link, plain]
    if os.geteuid() == 0:
        other = f"bench-service-{dead.pid + 1000000}.ipc"
        sock(os.path.join(base, other))
        os.chown(os.path.join(base, other), 65534, 65534)
        kept.append(other)
    out = subprocess.run([ctmp, "sweep-sockets", base], capture_output=True,
                         text=True, timeout=30, env=env_in(base))
    left = sorted(n for n in os.listdir(base) if n != "outside")
    check(out.stdout.strip() == str(len(gone)) and left == sorted(kept) and
          os.path.exists(target) and connects(os.path.join(base, listening)),
          f"a C sweep removes a dead run's old ipc:// sockets in /tmp "
          f"({len(gone)}), keeps a live one's, a listener's whose pid is "
          f"gone, a link (and its target), a plain file, look-alikes and "
          f"another user's: {out.stdout.strip()}"
          f" {out.stderr.strip()[:200]}, left {left}, want {sorted(kept)}")
    listener.close()
    shutil.rmtree(base, ignore_errors=True)
    old_sockets_other_ns(ctmp)


def test_old_sockets_at_start(ctmp):
    """A C test's start (its first sc_test_tmp_dir()) sweeps the old
    sockets, each name older builds left with a pid in it
    (semcache-e2e-, test-dispatch-[cap-|leave-|undo-|total-|unread-],
    semcache-cli-test-PID[-2|-3|-b].ipc, bench-service-PID.ipc), here in
    a directory of the test's (test_ctmp old-sockets DIR) rather than
    /tmp; a name with another suffix stays. Without the sweep's call
    there, or those names, they stay."""
    base = tempfile.mkdtemp()
    socks = tempfile.mkdtemp(dir=testtmp.short_dir(50))
    dead = subprocess.Popen(["true"])
    dead.wait()
    p = dead.pid
    gone = [f"semcache-e2e-{p}.ipc", f"test-dispatch-{p}.ipc",
            f"test-dispatch-cap-{p}.ipc", f"test-dispatch-leave-{p}.ipc",
            f"test-dispatch-undo-{p}.ipc", f"test-dispatch-total-{p}.ipc",
            f"test-dispatch-unread-{p}.ipc", f"semcache-cli-test-{p}.ipc",
            f"semcache-cli-test-{p}-2.ipc", f"semcache-cli-test-{p}-3.ipc",
            f"semcache-cli-test-{p}-b.ipc", f"bench-service-{p}.ipc"]
    kept = [f"semcache-cli-test-{p}-c.ipc", f"test-dispatch-served-{p}.ipc"]
    for name in gone + kept:
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(socks, name))
        s.close()  # the file stays, as a killed listener's
    out = subprocess.run([ctmp, "old-sockets", socks], capture_output=True,
                         text=True, timeout=30, env=env_in(base))
    left = sorted(os.listdir(socks))
    check(out.stdout.strip() == "ok" and left == sorted(kept),
          f"a C test's start sweeps the old sockets older builds left "
          f"({len(gone)} names), keeps other names: "
          f"{out.stdout.strip()} {out.stderr.strip()[:200]}, left {left}, "
          f"want {sorted(kept)}")
    shutil.rmtree(socks, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


def connects(path):
    """Whether a listener has the ipc:// socket path: a non-blocking
    connect() to it is taken, or finds its backlog full (EAGAIN), not
    refused (ECONNREFUSED) nor the name gone (ENOENT)."""
    c = socket.socket(socket.AF_UNIX)
    c.setblocking(False)
    try:
        c.connect(path)
        return True
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        c.close()


def old_sockets_other_ns(ctmp):
    """The sweep run from another pid namespace, where the pid of a live
    run's old socket name reads as gone (unshare -pf --mount-proc, as
    root; skipped, said, where it cannot run): the listener's socket is
    kept and answers a connect() after; a socket nobody listens on goes.
    It removed the live one before (connect() then failed ENOENT)."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "-pf", "--mount-proc", "true"],
                           capture_output=True, timeout=30) if unshare \
        else None
    if probe is None or probe.returncode != 0:
        print("tmpdirs: skipped the sweep from another pid namespace: "
              + ("no unshare" if probe is None else
                 f"unshare -pf --mount-proc fails "
                 f"({probe.stderr.decode(errors='replace').strip()[:120]})"))
        return
    base = tempfile.mkdtemp(dir=testtmp.short_dir(50))
    live = os.path.join(base, f"bench-service-{os.getpid()}.ipc")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(live)
    listener.listen(16)
    stale = os.path.join(base, f"bench-echo-{os.getpid()}.ipc")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    out = subprocess.run([unshare, "-pf", "--mount-proc", ctmp,
                          "sweep-sockets", base], capture_output=True,
                         text=True, timeout=30, env=env_in(base))
    check(out.stdout.strip() == "1" and connects(live) and
          not os.path.lexists(stale),
          f"a C sweep from another pid namespace keeps a live listener's "
          f"old socket (our pid, gone there) and removes one nobody "
          f"listens on: swept {out.stdout.strip()} "
          f"{out.stderr.strip()[:200]}, live "
          f"{'answers' if connects(live) else 'DOES NOT ANSWER'}, stale "
          f"{'LEFT' if os.path.lexists(stale) else 'gone'}")
    listener.close()
    shutil.rmtree(base, ignore_errors=True)


def main():
    argv = sys.argv[1:]
    ctmp = argv[argv.index("--ctmp") + 1]
    test_python_and_c(ctmp)
    test_bases(ctmp)
    test_new_leftovers(ctmp)
    test_sweep_links(ctmp)
    test_remove_edges(ctmp)
    test_unreadable(ctmp)
    test_old_sockets(ctmp)
    test_old_sockets_at_start(ctmp)
    test_cli_lock()
    test_cli_posix()
    if "--config" in argv:
        test_config_names(argv[argv.index("--config") + 1])
    if "--persist" in argv:
        test_killed_c_test(argv[argv.index("--persist") + 1])
    if "--bench" in argv:
        test_bench_names(argv[argv.index("--bench") + 1],
                         argv[argv.index("--server") + 1])
        test_bench_keeps(argv[argv.index("--bench") + 1],
                         argv[argv.index("--server") + 1])
        test_restart_keeps(argv[argv.index("--bench") + 1],
                           argv[argv.index("--server") + 1])
        test_restart_dead(argv[argv.index("--bench") + 1],
                          argv[argv.index("--server") + 1])
        test_ipc_swept(argv[argv.index("--bench") + 1], ctmp)
    p, f = test_semcache.passed, test_semcache.failed
    print(f"tmpdirs: {p} passed, {f} failed")
    return 1 if f or not p else 0


if __name__ == "__main__":
    sys.exit(main())
