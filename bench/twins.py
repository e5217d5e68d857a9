#!/usr/bin/python3
"""twins.py CACHE.jsonl QUERIES.jsonl [--words K] [--dump FILE]
          [--stream-dump FILE]

How much of an intent set's hit rate is out of any embedder's reach at a
precision floor, measured on the data alone.

Twins: two cache lines under different labels whose lower-cased word sets
differ by at most K words (--words, default 2; 0 = the same words, only
case, punctuation or backticks differ). A twinned label is one each of
whose cache lines has such a twin (with one line per label, as in
gptcache_mock, any label with a twin; a label with other, distinct lines
can still be told apart by them). A query of a twinned label may be a
paraphrase that scores about the same against its line and the twin, so
an embedder can be right on it only about half the time. The script
prints how many queries belong to such labels and two bounds for an
embedder that is right on every other query and flips a coin on these:
  - serving none of them: the hit rate of the others alone, at 100%
    precision;
  - the most hits at precision >= 97% / 95%: serving x of them costs
    about x / 2 wrong hits.

It also bounds stream mode (queries in order, each miss inserted under its
label): a query can hit right only when its label came before, and one
whose text came before (as the exact layer compares texts: ASCII case and
runs of whitespace aside) is served that earlier query's label whatever
the embedder. The most precision any embedder could have there counts
every label repeat right and every such duplicate of another label (or
of none: out of scope) wrong.

With --dump FILE (the output of `build/embed_eval --test --set NAME
--dump 100000 ...`, which prints every served query with its best
candidate), it also splits the queries into twins' and others' and each
into served right, served wrong and refused, to show where a measured
rule loses its hits, and gives the median word overlap (Jaccard of word
sets) of the others' served and refused queries with their own label's
closest line. A second --dump FILE (the same run under another rule, say
with no margin) splits the queries the first refused by what the second
did with them.

With --stream-dump FILE (the output of `build/embed_eval --test --set
NAME --stream T --dump 1`, which prints every stream hit as the line
numbers of the query and of the earlier query that served it), it splits
the hits at the first threshold into right, between twin labels (two
labels with a twin pair of lines), between other labels and out of scope,
and compares the word overlap of the two labels' closest lines in the
wrong hits with a line's closest line of another label across the cache.
"""
import argparse
import collections
import json
import re

WORD = re.compile(r"[a-z0-9]+")


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def twin_labels(cache, k):
    """Labels each of whose lines has a twin, and the number of twin pairs.
    At most k of a line's words are missing from a twin, so a twin holds
    one of any k + 1 of them: a line of more than k words is compared only
    with the later lines holding one of its k + 1 rarest, one of k words or
    fewer (it may share none) with every later line."""
    rows = [(frozenset(WORD.findall(c["text"].lower())), c["label"])
            for c in cache]
    freq = collections.Counter(w for ws, _ in rows for w in ws)
    post = collections.defaultdict(list)
    for i, (ws, _) in enumerate(rows):
        for w in ws:
            post[w].append(i)
    twinned = [False] * len(rows)
    pairs = 0
    label_pairs = set()
    for i, (a, la) in enumerate(rows):
        if len(a) <= k:
            cand = range(i + 1, len(rows))
        else:
            rare = sorted(a, key=lambda w: (freq[w], w))[:k + 1]
            cand = sorted({j for w in rare for j in post[w] if j > i})
        for j in cand:
            b, lb = rows[j]
            if la != lb and len(a ^ b) <= k:
                twinned[i] = twinned[j] = True
                pairs += 1
                label_pairs.add(frozenset((la, lb)))
    labels = {}
    for t, (_, la) in zip(twinned, rows):
        labels[la] = labels.get(la, True) and t
    return {la for la, t in labels.items() if t}, pairs, label_pairs


def bound(others, twins, floor):
    """Most hits at precision >= floor, right on the others, coin flips on
    the twins' queries."""
    best = 0
    for x in range(twins + 1):
        hits = others + x
        if hits and (hits - x / 2) / hits >= floor:
            best = hits
    return best


WS = re.compile(r"[ \t\n\r\v\f]+")
UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                      "abcdefghijklmnopqrstuvwxyz")


def exact_form(text):
    """The exact layer's normal form (sc_cache_text_normalise)."""
    return WS.sub(" ", text.strip(" \t\n\r\v\f")).translate(UPPER)


def stream_bound(queries):
    """(label repeats, exact duplicates, most right hits, least wrong hits)
    in stream mode, for an embedder right on all else."""
    labels, first = set(), {}
    repeats = dups = right = wrong = 0
    for q in queries:
        text, label = exact_form(q["text"]), q["label"]
        repeat = label is not None and label in labels
        repeats += repeat
        if text in first:
            dups += 1
            if label is None or first[text] != label:
                wrong += 1  # out of scope: any hit is wrong
            else:
                right += 1
        else:
            first[text] = label
            right += repeat
        labels.add(label)
    return repeats, dups, right, wrong


def served(dump_path):
    """Query text -> list of right/wrong flags, one per served query."""
    with open(dump_path, encoding="utf-8") as f:
        text = f.read()
    out = collections.defaultdict(list)
    for ok, q in re.findall(r"  \[(ok |BAD)\] cos \S+ adj \S+  Q: (.*?)\n"
                            r"      C: ", text, re.S):
        out[q].append(ok == "ok ")
    return out


def jaccard(a, b):
    return len(a & b) / len(a | b) if a | b else 1.0


def median(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def stream_split(cache, queries, label_pairs, path):
    """Splits the stream hits of an embed_eval --dump run (its first
    threshold's) into right, out of scope, between twin labels and the
    rest, and compares how alike the two labels' lines are in the wrong
    hits with how alike a line and its closest line of another label are
    in the whole cache (at most 1,000 lines of it, evenly spaced)."""
    hit = re.compile(r"  stream @(\S+) hit: query (\d+) <- query (\d+)$")
    hits, thr = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = hit.match(line.rstrip("\n"))
            if m and thr in (None, m.group(1)):
                thr = m.group(1)
                hits.append((int(m.group(2)), int(m.group(3))))
    lines = collections.defaultdict(list)
    for c in cache:
        lines[c["label"]].append(frozenset(WORD.findall(c["text"].lower())))
    count = collections.Counter()
    alike = []
    for q, h in hits:
        la, lb = queries[q]["label"], queries[h]["label"]
        if la is not None and la == lb:
            count["right"] += 1
        elif la is None or lb is None:
            count["out of scope"] += 1
        elif frozenset((la, lb)) in label_pairs:
            count["twin labels"] += 1
        else:
            count["other labels"] += 1
        if la is not None and lb is not None and la != lb and \
                lines.get(la) and lines.get(lb):
            alike.append(max(jaccard(x, y) for x in lines[la]
                             for y in lines[lb]))
    print(f"stream hits at {thr}: {len(hits)}: " + ", ".join(
        f"{s} {count[s]}" for s in ("right", "twin labels", "other labels",
                                    "out of scope")))
    rows = [(frozenset(WORD.findall(c["text"].lower())), c["label"])
            for c in cache]
    step = max(1, len(rows) // 1000)
    near = [max((jaccard(w, x) for x, lb in rows if lb != la), default=0.0)
            for w, la in rows[::step]]
    print(f"word overlap of the two labels' closest lines in wrong hits: "
          f"median {median(alike):.2f}; a line and its closest line of "
          f"another label: median {median(near):.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("queries")
    ap.add_argument("--words", type=int, default=2)
    ap.add_argument("--dump", action="append", default=[])
    ap.add_argument("--stream-dump")
    a = ap.parse_args()
    cache, queries = load(a.cache), load(a.queries)
    labels, pairs, label_pairs = twin_labels(cache, a.words)
    n = len(queries)
    nt = sum(q["label"] in labels for q in queries)
    no = n - nt
    print(f"twin pairs (<= {a.words} words apart): {pairs}, labels {len(labels)}")
    print(f"queries of those labels: {nt} of {n}")
    print(f"right on the others, none of these served: {100 * no / n:.1f}% hits")
    for floor in (0.97, 0.95):
        b = bound(no, nt, floor)
        print(f"with coin flips on these, best at precision >= "
              f"{100 * floor:.0f}%: {100 * b / n:.1f}% hits")
    rep, dups, right, wrong = stream_bound(queries)
    print(f"stream: {rep} queries repeat a label; {dups} repeat an earlier "
          f"text, {wrong} of them under another label or none; best "
          f"precision {100 * right / max(1, right + wrong):.1f}% "
          f"({right} right, {wrong} wrong)")
    if a.stream_dump:
        stream_split(cache, queries, label_pairs, a.stream_dump)
    if not a.dump:
        return
    flags = [served(d) for d in a.dump[:2]]
    lines = collections.defaultdict(list)
    for c in cache:
        lines[c["label"]].append(frozenset(WORD.findall(c["text"].lower())))
    count, later = collections.Counter(), collections.Counter()
    overlap = {"served": [], "refused": []}
    for q in queries:
        group = "twins'" if q["label"] in labels else "others"
        state = []
        for f in flags:
            got = f.get(q["text"])
            state.append("refused" if not got else
                         "served right" if got.pop(0) else "served wrong")
        count[(group, state[0])] += 1
        if len(state) > 1 and state[0] == "refused":
            later[(group, state[1])] += 1
        if group == "others" and lines.get(q["label"]):
            w = frozenset(WORD.findall(q["text"].lower()))
            best = max(jaccard(w, ln) for ln in lines[q["label"]])
            overlap["refused" if state[0] == "refused" else "served"].append(
                best)
    states = ("served right", "served wrong", "refused")
    for group in ("twins'", "others"):
        print(group, ", ".join(f"{s} {count[(group, s)]}" for s in states))
    print(f"others' median word overlap with their own line: served "
          f"{median(overlap['served']):.2f}, refused "
          f"{median(overlap['refused']):.2f}")
    if len(flags) > 1:
        for group in ("twins'", "others"):
            print(f"{group} refused by the first dump, in the second: " +
                  ", ".join(f"{s} {later[(group, s)]}" for s in states))

if __name__ == "__main__":
    main()
