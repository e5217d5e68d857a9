"""The tests' temporary files: one directory per test process,
BASE/semcache-run.PID.XXXXXX (BASE: tempfile.gettempdir(): $TMPDIR,
$TEMP, $TMP, /tmp... the first that can be written; tests/test_tmp.c
picks the same), where use() has tempfile put
all the process makes (tempfile.tempdir), removed with all in it when the
process exits (and on SIGTERM or SIGHUP, where nothing else handles
them); the rules of the C tests' tests/test_tmp.h, so that each sweeps
the other's.

A process killed (SIGKILL: ctest's time-out; a crash) cannot remove its
directory. The next test process to make its own removes every one whose
process is gone: no process has its pid, and its flock (taken on the
directory by its process, held until that exits) is free. A live run's
directory is never removed; a pid taken again by another process only
keeps a dead one's until that one ends too; another user's is never
removed (even by root). A directory is made as
.semcache-new.PID.XXXXXXXX, locked, then renamed: no sweep finds a run
directory unlocked. A sweep removes such a .semcache-new.PID.* by the
same rules (one left by a crash before its rename); one it takes from an
owner in another pid namespace before that locks it, the owner finds
gone and makes again."""
import atexit
import fcntl
import os
import re
import shutil
import signal
import tempfile

PREFIX = "semcache-run."
NEW_PREFIX = ".semcache-new."  # before it is locked and named
MAKE_TRIES = 8  # a directory swept before it was locked: made anew
_NAME = re.compile(
    f"(?:{re.escape(PREFIX)}|{re.escape(NEW_PREFIX)})([0-9]+)\\..+")

# For tests of this module: when set, called with the path of each
# .semcache-new.PID.* directory just made, before it is opened and locked.
_new_hook = None

_dir = None
_short = None  # under /tmp, when _dir is too long for a socket path
_owner = None  # the process that made it: a fork does not own it


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return True  # not a pid: not ours to judge


def sweep(base):
    """Removes the directories of base named semcache-run.PID.* or
    .semcache-new.PID.* whose process is gone (see the module's
    comment) and whose owner is this process's effective uid (another
    user's is kept, even by root); how many it removed (one left in
    part, as one holding a directory it may not read, is not counted)."""
    removed = 0
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        m = _NAME.fullmatch(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(base, name)
        try:
            # O_NOFOLLOW: a link of that name is no run's directory.
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            # Another user's is not this one's to remove (as root, a
            # sweep could remove anyone's). Its owner holds this lock
            # while it runs (in another pid namespace, too); a sweep
            # beside this one while it removes. A NEW_PREFIX one is not
            # locked yet by an owner in another pid namespace whose pid
            # this sweep misread: removed, its owner makes another
            # (_make()). shutil.rmtree() removes through descriptors,
            # following no link (as tests/test_tmp.c's sweep does).
            if os.fstat(fd).st_uid != os.geteuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _remove():
    if os.getpid() == _owner:
        for d in (_dir, _short):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)


def _on_signal(sig, frame):
    _remove()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def _make(base):
    """Sweeps base and makes a run directory of this process in it,
    locked until exit; its path."""
    global _owner
    sweep(base)
    # Made under NEW_PREFIX and this pid, locked, then renamed to its run
    # name: a sweep never sees a run directory unlocked, whatever it reads
    # of its pid (from another pid namespace, the pid says nothing). A
    # sweep takes a NEW_PREFIX one whose pid is gone and whose lock is
    # free: one left by a crash before its rename, or, read from another
    # pid namespace, this one before it is locked; then the open, or the
    # rename (of a directory removed under its lock), finds it gone and
    # another is made.
    for tries in range(MAKE_TRIES):
        new = tempfile.mkdtemp(prefix=f"{NEW_PREFIX}{os.getpid()}.",
                               dir=base)
        d = os.path.join(base,
                         PREFIX + os.path.basename(new)[len(NEW_PREFIX):])
        if _new_hook is not None:
            _new_hook(new)
        fd = None
        try:
            fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)  # held to exit
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.lexists(d):
                raise FileExistsError(f"{d} exists")
            os.rename(new, d)
            break
        except BaseException as e:
            if fd is not None:
                os.close(fd)
            try:
                os.rmdir(new)
            except OSError:
                pass
            if (not isinstance(e, FileNotFoundError) or
                    tries + 1 == MAKE_TRIES):
                raise
    if _owner != os.getpid():
        _owner = os.getpid()
        atexit.register(_remove)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_signal)
    return d


def run_dir():
    """This process's directory, made on the first call (after the sweep
    of those whose process is gone) and removed at exit; raises OSError
    when it cannot be made."""
    global _dir
    if _dir is None:
        _dir = _make(tempfile.gettempdir())
    return _dir


def short_dir(max_len):
    """run_dir() when it is under max_len characters long; else a second
    directory of this process's, /tmp/semcache-run.PID.XXXXXXXX, by the
    same rules: for ipc:// socket paths, which cannot pass 107 bytes (the
    C tests' sc_test_tmp_short_dir()). Raises OSError when neither is."""
    global _short
    d = run_dir()
    if len(d) < max_len:
        return d
    if _short is None:
        _short = _make("/tmp")
    if len(_short) >= max_len:
        raise OSError(f"no directory of under {max_len} bytes: {_short}")
    return _short


def use():
    """Makes tempfile's files and directories (mkdtemp, mkstemp,
    TemporaryDirectory...) this process's, in run_dir(). Returns it."""
    tempfile.tempdir = run_dir()
    return tempfile.tempdir
