#!/usr/bin/python3
"""dev_pairs.py CACHE.jsonl OUT_DIR [--pos-pool N] [--neg-pool N]

Makes a development pair set, in the pairs format of
../shared/data/README.md, from an intent set's cache file: a pair
benchmark's stand-in that never reads a query or pair file.

4,000 duplicates: a line and, of N other lines of its label drawn at
random (--pos-pool, default 5), the one sharing the most words with it.
4,000 non-duplicates: a line and, of N lines of other labels drawn at
random (--neg-pool, default 20), the one sharing the most words (Jaccard
of lower-cased word sets, so the pick does not depend on the embedder).
Both halves are hard in the way a pair set such as QQP's is: the two
prompts of a pair share much of their wording either way. The draw is
seeded, so the file is the same on every run.

Writes OUT_DIR/qqp_meancache.pairs.jsonl, the name bench/embed_eval's
--test reads pairs from:
    bench/dev_pairs.py ../shared/data/banking77.cache.jsonl /tmp/dev520
    build/embed_eval --table T --data /tmp/dev520 --test --set qqp_meancache
"""
import argparse
import json
import os
import random
import re

WORD = re.compile(r"[a-z0-9']+")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("out_dir")
    ap.add_argument("--pos-pool", type=int, default=5)
    ap.add_argument("--neg-pool", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=4000,
                    help="pairs of each kind")
    args = ap.parse_args()

    rows = []
    with open(args.cache, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            if isinstance(o.get("text"), str) and isinstance(o.get("label"),
                                                             str):
                rows.append(o)
    words = [set(WORD.findall(r["text"].lower())) for r in rows]
    by_label = {}
    for i, r in enumerate(rows):
        by_label.setdefault(r["label"], []).append(i)
    if len(rows) < 2 * args.pairs:
        raise SystemExit(f"{args.cache}: {len(rows)} lines, fewer than "
                         f"{2 * args.pairs}")

    def overlap(i, k):
        return len(words[i] & words[k]) / max(1, len(words[i] | words[k]))

    rnd = random.Random(20261203)
    order = list(range(len(rows)))
    rnd.shuffle(order)
    out = []
    for i in order[:args.pairs]:
        mates = [k for k in by_label[rows[i]["label"]] if k != i]
        if not mates:
            continue
        pool = rnd.sample(mates, min(args.pos_pool, len(mates)))
        k = max(pool, key=lambda k: overlap(i, k))
        out.append((rows[i]["text"], rows[k]["text"], True))
    for i in order[args.pairs:2 * args.pairs]:
        pool = []
        while len(pool) < args.neg_pool:
            k = rnd.randrange(len(rows))
            if rows[k]["label"] != rows[i]["label"]:
                pool.append(k)
        k = max(pool, key=lambda k: overlap(i, k))
        out.append((rows[i]["text"], rows[k]["text"], False))
    rnd.shuffle(out)
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "qqp_meancache.pairs.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for a, b, dup in out:
            f.write(json.dumps({"a": a, "b": b, "duplicate": dup}) + "\n")
    print(f"{path}: {len(out)} pairs")


if __name__ == "__main__":
    main()
