#!/usr/bin/env python3
"""test_ranges.py --server SEMCACHED --src DIR: every numeric setting of
the daemon is taken alike as a flag and as its configuration key.

For each setting whose range docs/CONFIG.md's table of keys gives (its
"type" column: `1..2^20`, `bytes, 1 MiB..2^50`, `ms, 100..3600000`,
`bytes >= 1`), and for the proxy's numeric flags (the range that ends
each one's row of docs/PROXY.md's table of flags), the real semcached
is asked to take min - 1, min, max and max + 1, and values that are not numbers, once as `--flag VALUE` and once
as `{"key": VALUE}` in a --config file. Each must be accepted or refused
by both, as the documented range says; a refusal names the flag or the
key, and a number out of range is refused by both with the same words
("must be 1024..2^30 bytes"), which --help's list of ranges gives too,
for the proxy's flags as for the daemon's: one range, one text. Every numeric flag --help lists (metavar N, MS or BYTES) must be
covered, so that a new one cannot pass untested.

Nothing here starts a server: each probe ends at a sentinel flag after
the one probed, which the daemon refuses as unknown (exit 2) once the
flags and files before it are taken."""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
import testtmp  # noqa: E402

sys.path.insert(0, HERE)
from test_docs import first_table  # noqa: E402

SENTINEL = "--no-such-flag-ranges"

# The proxy's numeric flags and their keys of the "proxy" object; their
# ranges are read from docs/PROXY.md's table of flags (proxy_doc_ranges).
PROXY_KEYS = {
    "--upstream-timeout": "upstream_timeout",
    "--upstream-max-duration": "upstream_max_duration",
    "--proxy-client-timeout": "client_timeout",
    "--proxy-workers": "workers",
}

# A JSON integer is a C long long in jansson: "bytes >= 1" ends there.
JSON_INT_MAX = (1 << 63) - 1

# Flag values that are no number semcached takes, in any range.
BAD_FLAG_VALUES = ["", "abc", "-1", "+1", " 1", "1 ", "1.5", "1e3", "0x10",
                   "1k", "18446744073709551616", "99999999999999999999999"]
# JSON values no numeric key takes: (text, whether the message names the
# key; a number too big for jansson is a parse error of the file).
BAD_JSON_VALUES = [('"1"', True), ("1.5", True), ("1.0", True), ("-1", True),
                   ("true", True), ("null", True), ("1e3", True),
                   ("[]", True), ("{}", True),
                   ("18446744073709551616", False)]

failures = 0
checks = 0


def check(ok, what):
    global failures, checks
    checks += 1
    if not ok:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def number(text):
    """A bound as CONFIG.md writes it: 1024, 2^20, 2^63-1, 1 MiB."""
    text = text.strip()
    m = re.fullmatch(r"(\d+) MiB", text)
    if m:
        return int(m.group(1)) << 20
    m = re.fullmatch(r"(\d+)\^(\d+)(-1)?", text)
    if m:
        return int(m.group(1)) ** int(m.group(2)) - (1 if m.group(3) else 0)
    return int(text) if text.isdigit() else None


def doc_ranges(src):
    """(flag, key, lo, hi) of every row of CONFIG.md's table of keys whose
    type is a range of integers and that has a flag."""
    with open(os.path.join(src, "docs/CONFIG.md"), encoding="utf-8") as f:
        rows = first_table(f.read(), "| key | type | flag |")
    out = []
    for cells in rows:
        if len(cells) != 5:
            continue
        key = re.fullmatch(r"`([a-z_]+)`", cells[0])
        flag = re.fullmatch(r"`(--[a-z-]+)`", cells[2])
        typ = re.sub(r"^(bytes|ms|count), ", "", cells[1])
        if key is None or flag is None:
            continue
        m = re.fullmatch(r"(.+?)\.\.(.+)", typ)
        if m and number(m.group(1)) is not None \
                and number(m.group(2)) is not None:
            out.append((flag.group(1), key.group(1), number(m.group(1)),
                        number(m.group(2))))
            continue
        m = re.fullmatch(r"(?:bytes )?≥ (\d+)", typ)
        if m:
            out.append((flag.group(1), key.group(1), int(m.group(1)),
                        JSON_INT_MAX))
    return out


def proxy_doc_ranges(src):
    """(flag, key, lo, hi) of every numeric flag (metavar N or MS) of
    PROXY.md's table of flags, its range the "LO..HI" its last cell ends
    with; a numeric flag with no range there, or with no key in
    PROXY_KEYS, is a failure."""
    with open(os.path.join(src, "docs/PROXY.md"), encoding="utf-8") as f:
        rows = first_table(f.read(), "| flag | default |")
    out = []
    for cells in rows:
        flag = re.fullmatch(r"`(--[a-z-]+) (?:N|MS)`", cells[0])
        if flag is None:
            continue
        flag = flag.group(1)
        m = re.search(r"\b(\d+)\.\.(\d+)$", cells[-1])
        check(m is not None, f"PROXY.md gives {flag}'s range")
        check(flag in PROXY_KEYS, f"{flag}'s key of \"proxy\" is known")
        if m is not None and flag in PROXY_KEYS:
            out.append((flag, PROXY_KEYS[flag], int(m.group(1)),
                        int(m.group(2))))
    check(sorted(f for f, _, _, _ in out) == sorted(PROXY_KEYS),
          f"PROXY.md's numeric flags are {sorted(PROXY_KEYS)}")
    return out


def run(server, args, cwd):
    p = subprocess.run([server] + args + [SENTINEL, "1"], cwd=cwd,
                       capture_output=True, text=True, timeout=20)
    out = p.stdout + p.stderr
    # Taken: the parse went on to the sentinel, refused as unknown.
    taken = p.returncode == 2 and f"unknown flag {SENTINEL}" in out
    return taken, p.returncode, out.strip()


def probe_flag(server, tmp, flag, value):
    return run(server, [flag, value], tmp)


def probe_key(server, tmp, key, text, proxy):
    path = os.path.join(tmp, "c.json")
    body = '{"%s": %s}' % (key, text)
    if proxy:
        body = '{"proxy": %s}' % body
    with open(path, "w") as f:
        f.write(body)
    return run(server, ["--config", path], tmp)


def one_setting(server, tmp, flag, key, lo, hi, proxy, help_ranges):
    name = f"proxy.{key}" if proxy else key
    values = [(lo - 1, False), (lo, True), (hi, True), (hi + 1, False)]
    for v, want in values:
        if v < 0:
            continue
        f_taken, f_rc, f_out = probe_flag(server, tmp, flag, str(v))
        k_taken, k_rc, k_out = probe_key(server, tmp, key, str(v), proxy)
        check(f_taken == want,
              f"{flag} {v}: {'taken' if want else 'refused'} "
              f"(documented {lo}..{hi}; exit {f_rc}: {f_out[-200:]})")
        check(k_taken == want,
              f"{name} {v}: {'taken' if want else 'refused'} "
              f"(documented {lo}..{hi}; exit {k_rc}: {k_out[-200:]})")
        check(f_taken == k_taken,
              f"{flag} and {name} agree on {v} (flag "
              f"{'taken' if f_taken else 'refused'}, key "
              f"{'taken' if k_taken else 'refused'})")
        if not f_taken:
            check(f_rc == 2 and flag in f_out,
                  f"{flag} {v}'s refusal names the flag: {f_out[-200:]}")
        if not k_taken and v <= JSON_INT_MAX:
            check(k_rc == 2 and f"key '{name}'" in k_out,
                  f"{name} {v}'s refusal names the key: {k_out[-200:]}")
        if not f_taken and not k_taken and v <= JSON_INT_MAX:
            # One range, one text: "must be LO..HI [UNIT]" alike.
            f_why = re.search(r"must be [^\n]*", f_out)
            k_why = re.search(r"must be [^\n]*", k_out)
            check(f_why is not None and k_why is not None and
                  f_why.group(0) == k_why.group(0),
                  f"{flag} and {name} refuse {v} with one text: "
                  f"{f_out[-120:]!r} / {k_out[-120:]!r}")
            # And --help says that range.
            if f_why is not None:
                check(help_ranges.get(flag) == f_why.group(0)[8:],
                      f"--help gives {flag} the range it is refused "
                      f"with: {help_ranges.get(flag)!r} / "
                      f"{f_why.group(0)!r}")
        if not f_taken:
            # Whatever the value (2^63 and past it too, which no key can
            # carry), the refusal states the range it applies, the one
            # CONFIG.md's or PROXY.md's table gives, as --help does: "1 or
            # more" for max_bytes' 2^63-1 was false at 2^63.
            f_why = re.search(r"must be (.+?)\.\.(\S+)", f_out)
            check(f_why is not None and
                  number(f_why.group(1)) == lo and
                  number(f_why.group(2)) == hi and
                  help_ranges.get(flag) == f_why.group(0)[8:] +
                  f_out[f_why.end():].split("\n")[0],
                  f"{flag} {v}: the refusal states {lo}..{hi} as --help "
                  f"does: {f_out[-120:]!r} / {help_ranges.get(flag)!r}")
    for v in BAD_FLAG_VALUES:
        taken, rc, out = probe_flag(server, tmp, flag, v)
        check(not taken and rc == 2 and flag in out,
              f"{flag} {v!r} is refused, naming the flag (exit {rc}: "
              f"{out[-200:]})")
    for text, named in BAD_JSON_VALUES:
        taken, rc, out = probe_key(server, tmp, key, text, proxy)
        check(not taken and rc == 2 and "bad configuration" in out and
              (not named or f"key '{name}'" in out),
              f"{name} {text} is refused (exit {rc}: {out[-200:]})")


def main():
    testtmp.use()
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--src", required=True)
    a = ap.parse_args()
    server = os.path.abspath(a.server)

    settings = doc_ranges(a.src)
    proxy = proxy_doc_ranges(a.src)
    check(len(settings) >= 14,
          f"CONFIG.md's numeric settings are found ({len(settings)})")
    p = subprocess.run([server, "--help"], capture_output=True, text=True,
                       timeout=20)
    numeric = set(re.findall(r"(--[a-z][a-z-]*[a-z]) (?:N|MS|BYTES)\b",
                             p.stdout))
    help_ranges = dict(re.findall(r"^  (--[a-z-]+) +([0-9][^\n]*\S)$",
                                  p.stdout, re.M))
    covered = {s[0] for s in settings} | {s[0] for s in proxy}
    check(len(numeric) >= 13 and numeric <= covered,
          f"every numeric flag of --help is probed: not "
          f"{sorted(numeric - covered)}")
    # --help's list of ranges has every numeric flag, the proxy's among
    # them, each with its documented range (and, below, the one it is
    # refused with: the table's).
    for flag, _, lo, hi in settings + proxy:
        m = re.fullmatch(r"(.+?)\.\.(\S+)( \S+)?", help_ranges.get(flag, ""))
        check(m is not None and number(m.group(1)) == lo and
              number(m.group(2)) == hi,
              f"--help lists {flag}'s range {lo}..{hi}: "
              f"{help_ranges.get(flag)!r}")

    with tempfile.TemporaryDirectory(prefix="semcache-ranges-") as tmp:
        for flag, key, lo, hi in settings:
            one_setting(server, tmp, flag, key, lo, hi, False, help_ranges)
        for flag, key, lo, hi in proxy:
            one_setting(server, tmp, flag, key, lo, hi, True, help_ranges)
    print(f"{len(settings) + len(proxy)} settings, {checks} checks, "
          f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
