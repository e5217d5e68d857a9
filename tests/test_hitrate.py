#!/usr/bin/python3
"""test_hitrate.py --bench PATH/TO/bench_hitrate --server PATH/TO/semcached
                   --table PATH/TO/embeddings.sctab

The hit-rate benchmark (issue 4) on small sets whose outcome is known
whatever the embedder: exact repeats (the exact layer serves them at every
threshold), a repeat filed under another label (a wrong hit), an
out-of-scope query of unrelated words, a label longer than any fixed
buffer, and pairs that are identical or unrelated. Checks the JSON rows'
fields and counts, the default rows, stream mode, the plots, the table
output, and that malformed files stop the run naming file and line.
A cache line labelled null is an answer no query's label matches.
Also bench/twins.py's counts and bounds on a set made for it.
Prints "N passed, N failed" last; exits 1 on a failure."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
from test_semcache import check  # noqa: E402
import test_semcache  # noqa: E402


def write_jsonl(path, rows, extra="", first=""):
    with open(path, "w") as f:
        f.write(first)
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(extra)


LONG = "answer-" + "x" * 400  # longer than any label buffer of 256 bytes
PW = "How do I reset my password?"
HOURS = "What are your opening hours?"
PARCEL = "Where is my parcel right now?"
NONSENSE = "zebra volcano quantum accordion"

CACHE = [
    {"text": PW, "label": "pw"},
    {"text": HOURS, "label": "hours"},
    {"text": PARCEL, "label": LONG},
    {"text": "Do you ship to Canada?", "label": None},
]
QUERIES = [
    {"text": PW, "label": "pw"},
    {"text": "what are your OPENING hours?", "label": "hours"},  # exact layer
    {"text": PARCEL, "label": LONG},
    {"text": PW, "label": "other"},  # the same prompt, another answer
    {"text": NONSENSE, "label": None},  # out of scope
]
PAIRS = [
    {"a": PW, "b": PW, "duplicate": True},
    {"a": "Where is my parcel?", "b": "where is my parcel", "duplicate": True},
    {"a": HOURS, "b": HOURS, "duplicate": False},  # a noisy label
    {"a": "What is the capital of France?", "b": NONSENSE,
     "duplicate": False},
    {"a": "Do you ship to Canada?", "b": "How do I bake sourdough bread?",
     "duplicate": False},
]
FIELDS = ["bench", "set", "mode", "threshold", "hit_rate", "precision",
          "oos_false_hit_rate", "queries", "default"]


def run(bench, server, table, *args):
    return subprocess.run([bench, "--server", server, "--table", table,
                           *args], capture_output=True, text=True,
                          timeout=120)


def intent_rows(rows, mode):
    return [r for r in rows if r.get("set") == "t" and r.get("mode") == mode]


def check_intent(rows):
    pre = intent_rows(rows, "preload")
    stream = intent_rows(rows, "stream")
    check(len(pre) == 4 and len(stream) == 4,
          f"3 sweep rows and a default row per mode ({len(pre)}, "
          f"{len(stream)})")
    for r in pre + stream:
        check(all(k in r for k in FIELDS), f"row has every field: {r}")
        check(r["bench"] == "hitrate" and r["queries"] == 5
              and r["oos_queries"] == 1, f"row counts the queries: {r}")
    check([r["default"] for r in pre] == [False, False, False, True],
          "the last preload row is the default one")
    check([r["threshold"] for r in pre[:3]] == [0.9, 0.94, 0.98]
          and pre[3]["threshold"] is None, "the sweep's thresholds")
    # Preload: the four repeats hit through the exact layer at every
    # threshold; three are right (the long label compares whole), one
    # was filed under another answer; the unrelated words never hit.
    for r in pre:
        check(r["hits"] == 4 and r["exact_hits"] == 4
              and r["correct_hits"] == 3, f"preload counts: {r}")
        check(abs(r["hit_rate"] - 0.8) < 1e-9
              and abs(r["precision"] - 0.75) < 1e-9
              and r["oos_false_hit_rate"] == 0, f"preload ratios: {r}")
    # Stream: only the repeat of PW (with another label) meets a stored
    # prompt: one hit, wrong.
    for r in stream:
        check(r["hits"] == 1 and r["correct_hits"] == 0
              and r["exact_hits"] == 1 and r["precision"] == 0
              and abs(r["hit_rate"] - 0.2) < 1e-9, f"stream counts: {r}")
    check(stream[3]["default"] is True, "the last stream row is the default")


def check_pairs(rows):
    pr = [r for r in rows if r.get("set") == "p" and r.get("mode") == "pairs"]
    check(len(pr) == 4, f"3 sweep rows and a default row of pairs ({len(pr)})")
    for r in pr:
        check(all(k in r for k in ["threshold", "precision", "recall", "f1",
                                   "pairs", "default"]), f"pair fields: {r}")
        # Identical or exact-layer pairs are served, unrelated ones are
        # not: 2 true and 1 false positive at every threshold here.
        check(r["pairs"] == 5 and abs(r["precision"] - 2 / 3) < 1e-3
              and r["recall"] == 1 and abs(r["f1"] - 0.8) < 1e-3,
              f"pair counts: {r}")
    check(pr[-1]["default"] is True and pr[-1]["threshold"] is None,
          "the last pair row is the default one")


def check_svg(path, curves, points=3):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        check(False, f"{path} parses as XML: {e}")
        return
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    check(len(lines) == curves, f"{path}: {curves} curves ({len(lines)})")
    for pl in lines:
        pts = pl.get("points", "").split()
        check(len(pts) == points, f"{path}: a point per threshold ({pts})")
    with open(path) as f:
        text = f.read().lower()
    check("nan" not in text and "inf" not in text,
          f"{path}: every coordinate is a number")


def check_bad_input(bench, server, table, tmp):
    good_c = os.path.join(tmp, "t.cache.jsonl")
    good_q = os.path.join(tmp, "t.queries.jsonl")
    cases = [
        ("not JSON", [{"text": PW, "label": "a"}], "{oops\n", ":2: not a "
         "JSON object"),
        ("an array", [], "[1, 2]\n", ":1: not a JSON object"),
        ("no label", [{"text": PW}], "", ":1: \"label\" is missing"),
        ("a number as text", [{"text": 7, "label": "a"}], "",
         ":1: \"text\" must be a string"),
        ("a number as label", [{"text": PW, "label": 3}], "",
         ":1: \"label\" must be a string"),
        ("no records", [], "\n  \n", "no records"),
    ]
    for what, rows, extra, want in cases:
        bad = os.path.join(tmp, "bad.queries.jsonl")
        write_jsonl(bad, rows, extra)
        r = run(bench, server, table, "--cache", good_c, "--queries", bad)
        check(r.returncode != 0 and want in r.stderr
              and "bad.queries.jsonl" in r.stderr,
              f"{what}: refused naming file and line ({r.returncode}, "
              f"{r.stderr.strip()[-200:]!r})")
    bad = os.path.join(tmp, "bad.pairs.jsonl")
    write_jsonl(bad, [{"a": PW, "b": PW, "duplicate": "yes"}])
    r = run(bench, server, table, "--pairs", bad)
    check(r.returncode != 0 and ":1: \"duplicate\" must be true or false"
          in r.stderr, f"a pair's duplicate must be a boolean ({r.stderr!r})")
    r = run(bench, server, table, "--cache", os.path.join(tmp, "none.jsonl"),
            "--queries", good_q)
    check(r.returncode != 0 and "none.jsonl" in r.stderr
          and "No such file" in r.stderr, f"a missing file ({r.stderr!r})")
    r = run(bench, server, table, "--cache", good_c)
    check(r.returncode == 2 and "usage" in r.stderr,
          "--cache without --queries is a usage error")
    r = run(bench, server, table, "--cache", good_c, "--queries", good_q,
            "--sweep", "0.9:0.5:0.1")
    check(r.returncode == 2, "a sweep running backwards is refused")
    r = subprocess.run([bench, "--server", server, "--table",
                        os.path.join(tmp, "no.sctab"), "--cache", good_c,
                        "--queries", good_q], capture_output=True, text=True,
                       timeout=60)
    check(r.returncode != 0 and "fetch-embeddings.sh" in r.stderr,
          f"no table: says how to make one ({r.stderr!r})")


def check_odd_files(bench, server, table, tmp):
    """Files of the documented formats that are odd but valid: a name that
    is no namespace name (a space, '+'), and empty or blank texts. They run;
    an empty text is never stored, and looked up it is a miss."""
    cache = os.path.join(tmp, "my set+1.cache.jsonl")
    queries = os.path.join(tmp, "my set+1.queries.jsonl")
    pairs = os.path.join(tmp, "odd pairs.pairs.jsonl")
    write_jsonl(cache, CACHE + [{"text": "", "label": "x"},
                                {"text": "   ", "label": "y"}])
    write_jsonl(queries, QUERIES + [{"text": "", "label": "x"}])
    write_jsonl(pairs, PAIRS + [{"a": "", "b": "hello", "duplicate": False},
                                {"a": "hi", "b": "", "duplicate": True}])
    r = run(bench, server, table, "--cache", cache, "--queries", queries,
            "--pairs", pairs, "--sweep", "0.90:0.98:0.04", "--json")
    rows = []
    for line in r.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    sets = sorted({x.get("set") for x in rows})
    check(r.returncode == 0 and sets == ["my_set_1", "odd_pairs"] and
          "empty text" in r.stderr,
          f"odd file names and empty texts run ({sets}, {r.stderr[-800:]!r})")
    pre = [x for x in rows if x.get("set") == "my_set_1"
           and x.get("mode") == "preload" and x.get("default")]
    check(len(pre) == 1 and pre[0].get("queries") == len(QUERIES) + 1,
          f"the empty query counts as a query ({pre})")


def check_null_cache_label(bench, server, table, tmp):
    """A cache line labelled null is an answer of its own: a query served
    it is never right, not even one labelled "" (it was stored as the
    response "" and counted right)."""
    cache = os.path.join(tmp, "nl.cache.jsonl")
    queries = os.path.join(tmp, "nl.queries.jsonl")
    write_jsonl(cache, [{"text": PW, "label": None},
                        {"text": HOURS, "label": "h"}])
    write_jsonl(queries, [{"text": PW, "label": ""},
                          {"text": HOURS, "label": "h"}])
    r = run(bench, server, table, "--cache", cache, "--queries", queries,
            "--mode", "preload", "--sweep", "0.90:0.98:0.04", "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()
            if x.startswith("{")]
    check(r.returncode == 0 and len(rows) == 4, f"it runs ({r.stderr!r})")
    for x in rows:
        check(x["hits"] == 2 and x["exact_hits"] == 2
              and x["correct_hits"] == 1 and x["precision"] == 0.5,
              f"a hit on a null-labelled cache line is wrong: {x}")


def check_twins(tmp):
    """bench/twins.py on 12 labels: "a" and "b" are twins (their lines'
    word sets differ only by case and punctuation), "d" is 2 words from
    "c" and 1 from "e", "c" 3 from "e", but c has a second line with no
    twin, so c is not twinned; "y" and "z" (no word and one) are twins; 20
    queries, 4 of a and b, 2 of c and d, none of e, y and z."""
    lines = [("Flask is a web framework.", "a"), ("flask IS a `web` framework", "b"),
             ("Numpy adds arrays to Python", "c"), ("Numpy adds matrices to Python", "d"),
             ("Numpy adds sparse matrices to Python", "e")]
    lines += [(f"alpha{i} beta{i} gamma{i}", f"x{i}") for i in range(5)]
    lines += [("Numpy is fast", "c"), ("?? !!", "y"), ("ok", "z")]
    cache = os.path.join(tmp, "tw.cache.jsonl")
    queries = os.path.join(tmp, "tw.queries.jsonl")
    write_jsonl(cache, [{"text": t, "label": lab} for t, lab in lines])
    qs = ["a", "a", "b", "b", "c", "d"] + [f"x{i % 5}" for i in range(14)]
    # An x query shares 2 of 4 words with its line, query 6 3 of 4.
    texts = [f"query {i}" if lab[0] != "x" else
             f"alpha{lab[1]} beta{lab[1]} q{i}" +
             (f" gamma{lab[1]}" if i == 6 else "") for i, lab in enumerate(qs)]
    write_jsonl(queries, [{"text": t, "label": lab}
                          for t, lab in zip(texts, qs)])
    dumps = [os.path.join(tmp, "tw.dump"), os.path.join(tmp, "tw2.dump")]
    # embed_eval --dump's lines: 3 served, then 4 under another rule.
    for path, rows in zip(dumps, (((0, "ok "), (2, "BAD"), (6, "ok ")),
                                  ((1, "ok "), (3, "BAD"), (4, "ok "),
                                   (7, "BAD")))):
        with open(path, "w") as f:
            for i, ok in rows:
                f.write(f"  [{ok}] cos 0.9 adj 0.9  Q: {texts[i]}\n"
                        f"      C: x\n")
    dump = dumps[0]
    tw = os.path.join(HERE, "..", "bench", "twins.py")

    def twins(*args):
        return subprocess.run([sys.executable, tw, cache, queries, *args],
                               capture_output=True, text=True, timeout=60)

    r = twins("--words", "0")
    check(r.returncode == 0 and "twin pairs (<= 0 words apart): 1, labels 2"
          in r.stdout and "queries of those labels: 4 of 20" in r.stdout
          and "none of these served: 80.0% hits" in r.stdout,
          f"twins.py: one pair of lines alike but for case ({r.stdout!r})")
    # 16 right + x served, x / 2 wrong: x = 1 keeps 97% and 95%
    # (16.5 / 17 = 97.06%), x = 2 neither (17 / 18 = 94.4%): 17 hits.
    check("at precision >= 97%: 85.0% hits" in r.stdout
          and "at precision >= 95%: 85.0% hits" in r.stdout,
          f"twins.py: the coin-flip bounds ({r.stdout!r})")
    # a, b and x0-x4 come again 1 + 1 + 9 times, no text twice.
    check("stream: 11 queries repeat a label; 0 repeat an earlier text"
          in r.stdout and "100.0% (11 right, 0 wrong)" in r.stdout,
          f"twins.py: a stream with no repeated text ({r.stdout!r})")
    r = twins("--dump", dump)
    check(r.returncode == 0 and "twin pairs (<= 2 words apart): 4, labels 6"
          in r.stdout
          and "queries of those labels: 5 of 20" in r.stdout
          and "twins' served right 1, served wrong 1, refused 3" in r.stdout
          and "others served right 1, served wrong 0, refused 14" in r.stdout,
          f"twins.py: two words apart, and a dump split ({r.stdout!r})")
    check("others' median word overlap with their own line: served 0.75, "
          "refused 0.50" in r.stdout,
          f"twins.py: the others' word overlap ({r.stdout!r})")
    # Refused by the first: twins' 1 (a), 3 (b), 5 (d); others' 4 (c)
    # and the x queries but 6, 7 among them.
    r = twins("--dump", dumps[0], "--dump", dumps[1])
    check(r.returncode == 0 and "twins' refused by the first dump, in the "
          "second: served right 1, served wrong 1, refused 1" in r.stdout
          and "others refused by the first dump, in the second: served "
          "right 1, served wrong 1, refused 12" in r.stdout,
          f"twins.py: a second dump ({r.stdout!r})")
    # Stream hits (embed_eval --dump's lines, line numbers of the queries
    # file): 1 <- 0 right (a), 2 <- 0 twin labels (b, a), 5 <- 4 twin
    # labels (d, c: their lines are twins though c is not twinned), 7 <- 6
    # other labels (x2, x1), 20 <- 8 out of scope; the line at another
    # threshold is not counted. Closest lines of the wrong hits' labels:
    # a / b 1.0, c / d 4 of 6 words, x1 / x2 none: median 0.67; a line's
    # closest of another label: 1, 1, 0.67, 0.83, 0.83, 0.14 and 7 zeros.
    sq = os.path.join(tmp, "tw3.queries.jsonl")
    write_jsonl(sq, [{"text": t, "label": lab}
                     for t, lab in zip(texts, qs)] +
                [{"text": "query 20", "label": None}])
    sdump = os.path.join(tmp, "tw.sdump")
    with open(sdump, "w") as f:
        for q, h in ((1, 0), (2, 0), (5, 4), (7, 6), (20, 8)):
            f.write(f"  stream @0.880 hit: query {q} <- query {h}\n")
        f.write("  stream @0.900 hit: query 3 <- query 2\n")
    r = subprocess.run([sys.executable, tw, cache, sq, "--stream-dump",
                        sdump], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and "stream hits at 0.880: 5: right 1, twin "
          "labels 2, other labels 1, out of scope 1" in r.stdout
          and "in wrong hits: median 0.67; a line and its closest line of "
          "another label: median 0.00" in r.stdout,
          f"twins.py: a stream dump's split ({r.stdout!r})")
    # Stream: "hi " repeats "Hi" (label a: right), "HI" too under b
    # (wrong), "x" repeats "x" out of scope (wrong), "y" repeats label a.
    write_jsonl(queries, [{"text": t, "label": lab} for t, lab in
                          (("Hi", "a"), ("hi ", "a"), ("HI", "b"),
                           ("x", None), ("x", None), ("y", "a"))])
    r = twins()
    check(r.returncode == 0 and "stream: 2 queries repeat a label; 3 repeat "
          "an earlier text, 2 of them under another label or none; best "
          "precision 50.0% (2 right, 2 wrong)" in r.stdout,
          f"twins.py: the stream bound ({r.stdout!r})")


def main():
    argv = sys.argv
    bench = argv[argv.index("--bench") + 1]
    server = argv[argv.index("--server") + 1]
    table = test_semcache.embed_table(argv, "test_hitrate")
    if table is None:
        return 1
    tmp = tempfile.mkdtemp(prefix="semcache-hitrate-")
    try:
        cache = os.path.join(tmp, "t.cache.jsonl")
        queries = os.path.join(tmp, "t.queries.jsonl")
        pairs = os.path.join(tmp, "p.pairs.jsonl")
        write_jsonl(cache, CACHE, "\n")  # a blank line is skipped
        # A UTF-8 byte-order mark first, as some editors save: read past.
        write_jsonl(queries, QUERIES, first="\ufeff")
        write_jsonl(pairs, PAIRS)
        r = run(bench, server, table, "--cache", cache, "--queries", queries,
                "--pairs", pairs, "--sweep", "0.90:0.98:0.04", "--json",
                "--svg", os.path.join(tmp, "plot-"))
        check(r.returncode == 0, f"bench_hitrate --json runs ({r.stderr!r})")
        rows = []
        for line in r.stdout.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                check(False, f"--json: every line is one object ({line!r})")
        check(len(rows) == 12, f"12 rows ({len(rows)})")
        check_intent(rows)
        check_pairs(rows)
        check_svg(os.path.join(tmp, "plot-t.svg"), 4)
        check_svg(os.path.join(tmp, "plot-p.svg"), 3)
        # One threshold (a step wider than the range): a plot still.
        r = run(bench, server, table, "--cache", cache, "--queries", queries,
                "--mode", "preload", "--sweep", "0.90:0.91:0.5", "--svg",
                os.path.join(tmp, "one-"))
        check(r.returncode == 0, f"a sweep of one threshold ({r.stderr!r})")
        check_svg(os.path.join(tmp, "one-t.svg"), 2, points=1)

        # The readable table, one mode.
        r = run(bench, server, table, "--cache", cache, "--queries", queries,
                "--mode", "preload", "--sweep", "0.90:0.98:0.04")
        check(r.returncode == 0 and "| t | preload | default | 5 | 80.0% | "
              "75.0% | 0.0% | 4 |" in r.stdout and "stream" not in r.stdout,
              f"the table's default row ({r.stdout[-600:]!r})")
        check_bad_input(bench, server, table, tmp)
        check_odd_files(bench, server, table, tmp)
        check_null_cache_label(bench, server, table, tmp)
        check_twins(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p, f = test_semcache.passed, test_semcache.failed
    print(f"test_hitrate: {p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
