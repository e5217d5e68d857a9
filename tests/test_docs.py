#!/usr/bin/env python3
"""test_docs.py --server SEMCACHED --src DIR: the daemon's flags and
configuration keys against what the pages a user reads say of them.

- `semcached --help` lists the same flags as docs/CONFIG.md's table of keys
  (`--proxy-*` there stands for every proxy flag) and README's synopsis
  ("The service"; `[proxy flags]` there stands for those after --upstream);
  docs/PERSISTENCE.md's settings table names only real flags and keys, and
  every flag of the persistence settings.
- Every flag those pages name is one the daemon takes (it says "unknown
  flag" for any other), and every key of CONFIG.md's table one its
  configuration file takes; every key proto/config.c reads at the top level
  (its numeric settings' table, sc_config_nums, included) is in that table.
- docs/HTTP.md's /metrics tables name every metric family the daemon
  writes (proto/http.c, metrics.c, semcached.c, proxy.c), with its type, and no
  other.
- Every SEMCACHE_* environment variable scripts/*.sh or the C sources
  read is named on a page (README, docs/, the Python client's README).
- Every JSON example in docs/CONFIG.md is a configuration semcached
  takes as written.
- README says where to get each labelled set its benchmark commands
  read from ../shared/data, which a clone does not have.
- proto/cli.c's header comment names the commands semcache-cli takes.

Nothing here starts a server: each probe stops at a flag or a file the
daemon refuses before it opens anything."""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def read(src, rel):
    with open(os.path.join(src, rel), encoding="utf-8") as f:
        return f.read()


def flags_in(text):
    return set(re.findall(r"--[a-z][a-z-]*[a-z]", text))


def first_table(text, header_start):
    """The rows of the first markdown table whose header line starts with
    header_start, as lists of cells."""
    rows = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                # An escaped bar (on\|off) is not a cell boundary.
                cells = re.split(r"(?<!\\)\|", row)[1:-1]
                rows.append([c.strip() for c in cells])
            return rows
    return rows


def run(server, args, cwd):
    p = subprocess.run([server] + args, cwd=cwd, capture_output=True,
                       text=True, timeout=20)
    return p.returncode, p.stdout + p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--src", required=True)
    a = ap.parse_args()
    server = os.path.abspath(a.server)

    rc, helptext = run(server, ["--help"], a.src)
    check(rc == 0, f"--help exits 0 (got {rc})")
    help_flags = flags_in(helptext) - {"--help"}
    proxy_flags = {f for f in help_flags if f.startswith("--proxy-")}
    upstream_flags = proxy_flags | {"--upstream-timeout",
                                    "--upstream-max-duration"}
    check(len(help_flags) > 20, f"--help lists the flags ({len(help_flags)})")

    # CONFIG.md: the table of keys, and its "flag" column.
    config = read(a.src, "docs/CONFIG.md")
    rows = first_table(config, "| key | type | flag |")
    check(len(rows) > 20, f"CONFIG.md's table of keys is found ({len(rows)})")
    cfg_flags = set()
    cfg_keys = set()
    for cells in rows:
        if len(cells) != 5:
            check(False, f"CONFIG.md row of 5 cells: {cells}")
            continue
        m = re.fullmatch(r"`([a-z_]+)`", cells[0])
        if m:
            cfg_keys.add(m.group(1))
        col = cells[2]
        if "`--proxy-*`" in col:
            cfg_flags |= proxy_flags
        cfg_flags |= flags_in(col.replace("`--proxy-*`", ""))
    # --config is the file itself, which the page's opening describes.
    if "`semcached --config FILE`" in config:
        cfg_flags.add("--config")
    check(cfg_flags == help_flags,
          f"CONFIG.md's flags are --help's: only in CONFIG.md "
          f"{sorted(cfg_flags - help_flags)}, only in --help "
          f"{sorted(help_flags - cfg_flags)}")

    # README's synopsis of the daemon.
    readme = read(a.src, "README.md")
    m = re.search(r"^`semcached \[--config FILE\].*?` serves", readme,
                  re.S | re.M)
    check(m is not None, "README's synopsis of semcached is found")
    if m:
        syn = flags_in(m.group(0))
        if "[proxy flags]" in m.group(0):
            syn |= upstream_flags
        check(syn == help_flags,
              f"README's synopsis has --help's flags: only in README "
              f"{sorted(syn - help_flags)}, only in --help "
              f"{sorted(help_flags - syn)}")

    # PERSISTENCE.md's settings: real flags and keys, and all of them.
    pers = read(a.src, "docs/PERSISTENCE.md")
    prow = first_table(pers, "| flag | config key |")
    check(len(prow) > 3, "PERSISTENCE.md's settings table is found")
    p_flags = set()
    for cells in prow:
        p_flags |= flags_in(cells[0])
        k = re.fullmatch(r"`([a-z_]+)`", cells[1])
        if k:
            check(k.group(1) in cfg_keys,
                  f"PERSISTENCE.md's key {k.group(1)} is in CONFIG.md")
    check(p_flags <= help_flags,
          f"PERSISTENCE.md's flags are real: {sorted(p_flags - help_flags)}")
    persist_flags = {"--persist", "--data-dir", "--fsync", "--compact-bytes",
                     "--repair", "--snapshot-at-stop"}
    check(persist_flags <= p_flags,
          f"PERSISTENCE.md's table has every persistence flag: missing "
          f"{sorted(persist_flags - p_flags)}")

    # HTTP.md's metric tables (section 2) against the metrics the daemon
    # writes: every family the code names, of the type it declares, and
    # no other.
    http = read(a.src, "docs/HTTP.md")
    sec = http[http.index("## 2. GET /metrics"):http.index("## 3. GET /report")]
    doc_metrics = {}
    for row in sec.splitlines():
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        if len(cells) != 3:
            continue
        for name in re.findall(r"`(semcache_[a-z_]+)", cells[0]):
            doc_metrics[name] = cells[1].strip()
    code_metrics = {}
    for rel in ("proto/http.c", "proto/metrics.c", "proto/semcached.c",
                "proto/proxy.c"):
        text = read(a.src, rel)
        if rel == "proto/proxy.c":
            # Only its metrics writer (other strings there are error
            # types); its counters come from a table of {"name", "help"}
            # written as semcache_proxy_<name>_total.
            text = text[text.index("sc_proxy_write_metrics(sc_proxy"):]
            text = text[:text.index("\n}\n")]
            table = text[text.index("one[][2] = {"):text.index("};")]
            for name in re.findall(r'\{"([a-z_]+)",', table):
                code_metrics[f"semcache_proxy_{name}_total"] = "counter"
        for name in re.findall(r'"(?:# HELP )?(semcache_[a-z_]+)', text):
            if not name.endswith("_"):  # semcache_proxy_%s_total
                code_metrics.setdefault(name, None)
        for name, kind in re.findall(r"# TYPE (semcache_[a-z_]+) ([a-z]+)",
                                     text):
            code_metrics[name] = kind
        # Families written through a helper: F("name", "type", ...).
        for name, kind in re.findall(r'F\("(semcache_[a-z_]+)", "([a-z]+)"',
                                     text):
            code_metrics[name] = kind
    check(len(code_metrics) > 20,
          f"the code's metric families are found ({len(code_metrics)})")
    check(set(code_metrics) == set(doc_metrics),
          f"HTTP.md's metric tables name the code's metrics: only in the "
          f"code {sorted(set(code_metrics) - set(doc_metrics))}, only in "
          f"HTTP.md {sorted(set(doc_metrics) - set(code_metrics))}")
    for name, kind in sorted(code_metrics.items()):
        if kind is not None and name in doc_metrics:
            check(doc_metrics[name] == kind,
                  f"HTTP.md gives {name} the type {doc_metrics[name]}, "
                  f"the code {kind}")

    with tempfile.TemporaryDirectory(prefix="semcache-docs-") as tmp:
        # Each flag the pages name is taken: the parse reaches the
        # sentinel after it, which it then refuses (exit 2, nothing
        # started). --config's value is a file that does not exist.
        named = help_flags | cfg_flags | p_flags
        for flag in sorted(named):
            args = [flag] if flag == "--repair" else [flag, "1"]
            if flag == "--config":
                args = [flag, os.path.join(tmp, "none.json")]
            rc, out = run(server, args + ["--no-such-flag-x"], tmp)
            check(rc == 2 and f"unknown flag {flag}" not in out,
                  f"{flag} is a flag semcached takes (exit {rc}: "
                  f"{out.strip()[:200]})")
        rc, out = run(server, ["--no-such-flag-y", "1"], tmp)
        check(rc == 2 and "unknown flag --no-such-flag-y" in out,
              f"an unknown flag is said (exit {rc})")

        # Each key of the table is one the file takes: a value no key
        # accepts ([[]]) is refused for its type, never as unknown.
        path = os.path.join(tmp, "c.json")
        for key in sorted(cfg_keys | {"no_such_key"}):
            with open(path, "w") as f:
                f.write('{"%s": [[]]}' % key)
            rc, out = run(server, ["--config", path], tmp)
            unknown = f"key '{key}': unknown key" in out
            if key == "no_such_key":
                check(rc == 2 and unknown, f"an unknown key is said ({out})")
            else:
                check(rc == 2 and not unknown,
                      f"CONFIG.md's key {key} is one semcached reads "
                      f"(exit {rc}: {out.strip()[:200]})")

    # Every top-level key proto/config.c reads is in CONFIG.md's table.
    src = read(a.src, "proto/config.c")
    body = src[src.index("sc_err sc_config_load("):]
    body = body[:body.index("\n}\n")]
    code_keys = set(re.findall(r'strcmp\(k, "([a-z_]+)"\) == 0', body))
    # And the numeric settings' keys, read through sc_config_nums.
    table = src[src.index("const sc_config_num sc_config_nums[]"):]
    table = table[:table.index("\n};\n")]
    code_keys |= set(re.findall(r'SC_NUM\((?:"--[a-z-]+"|NULL),\s*"([a-z_]+)"',
                                table))
    check(len(code_keys) > 20, f"config.c's keys are found ({len(code_keys)})")
    check(code_keys <= cfg_keys,
          f"every key config.c reads is in CONFIG.md's table: missing "
          f"{sorted(code_keys - cfg_keys)}")

    # Every SEMCACHE_* environment variable the scripts or the programs
    # read is one a page tells the user of.
    pages = "".join(read(a.src, rel) for rel in
                    ("README.md", "docs/CONFIG.md", "docs/HTTP.md",
                     "docs/PERSISTENCE.md", "docs/PROTOCOL.md",
                     "docs/PROXY.md", "clients/python/README.md"))
    env_read = set()
    for d in ("scripts",):
        for name in sorted(os.listdir(os.path.join(a.src, d))):
            if name.endswith(".sh"):
                env_read |= set(re.findall(r"\$\{?(SEMCACHE_[A-Z_]+)",
                                           read(a.src, os.path.join(d, name))))
    for d in ("proto", "cache", "embed", "index", "index/simd", "common"):
        for name in sorted(os.listdir(os.path.join(a.src, d))):
            if name.endswith(".c"):
                env_read |= set(re.findall(
                    r'getenv\("(SEMCACHE_[A-Z_]+)"\)',
                    read(a.src, os.path.join(d, name))))
    check(len(env_read) >= 5,
          f"the environment variables read are found ({sorted(env_read)})")
    check(all(v in pages for v in env_read),
          f"every SEMCACHE_* variable read is documented: missing "
          f"{sorted(v for v in env_read if v not in pages)}")

    # Every JSON example of CONFIG.md is a configuration semcached takes
    # as written: read with --config, then stopped by an unknown flag
    # (the files are read before any other flag, and nothing is opened).
    examples = re.findall(r"```json\n(.*?)```", config, re.S)
    check(len(examples) >= 2,
          f"CONFIG.md's JSON examples are found ({len(examples)})")
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(examples):
            path = os.path.join(tmp, f"example{i}.json")
            with open(path, "w") as f:
                f.write(text)
            rc, out = run(server, ["--config", path, "--not-a-flag"], tmp)
            check(f"configuration read from {path}" in out and
                  "bad configuration" not in out,
                  f"CONFIG.md's example {i + 1} is a valid configuration: "
                  f"{out.splitlines()[0] if out else rc}")

    # The labelled sets README's benchmark commands read (../shared/data,
    # not in the repository) each have a row saying where to get them.
    readme = read(a.src, "README.md")
    used = set(re.findall(r"\.\./shared/data/([a-z0-9_]+)\.", readme))
    rows = {r[0] for r in first_table(readme, "| set | files | source")}
    check(len(used) >= 1 and used <= rows,
          f"README says where to get the sets its commands use: missing "
          f"{sorted(used - rows)}")

    # proto/cli.c's header comment names every command the CLI takes (its
    # `known` list) and no other.
    cli = read(a.src, "proto/cli.c")
    m = re.search(r"known\[\] = \{([^}]*)\}", cli)
    known = set(re.findall(r'"([a-z-]+)"', m.group(1))) if m else set()
    head = cli[:cli.index("*/")]
    head = head[:head.index(" against ")] if " against " in head else ""
    said = set(re.findall(r"[a-z][a-z-]*[a-z]", head.split(":", 1)[-1])) - {
        "and"}
    check(len(known) > 5 and said == known,
          f"cli.c's header names the commands the CLI takes: missing "
          f"{sorted(known - said)}, not taken {sorted(said - known)}")

    # The nng start line as the pages show it: "N patches", or a count
    # that is scripts/patches' (cmake/NngPatched.cmake counts the glob).
    npatches = len(glob.glob(os.path.join(a.src, "scripts", "patches",
                                          "nng-1.5.2-*.patch")))
    for rel in ("README.md", "docs/CONFIG.md"):
        said = re.findall(r"patched \(([^ ]+) patches of scripts/patches",
                          read(a.src, rel))
        check(len(said) >= 1 and all(n in ("N", str(npatches))
                                     for n in said),
              f"{rel}'s nng start line counts the patches as \"N\" or "
              f"{npatches} (scripts/patches): {said}")

    if failures:
        print(f"test_docs: {failures} failed", file=sys.stderr)
        return 1
    print(f"test_docs: ok ({len(help_flags)} flags, {len(cfg_keys)} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
