#!/usr/bin/env python3
"""json2md.py - turn `bench_index --json` output into the markdown tables of
bench/RESULTS.md, so that the table there is exactly what the bench printed.
Usage: build/bench_index --json > run.json; bench/json2md.py run.json"""
import json
import sys


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for r in rows:
    if r["bench"] == "machine":
        print(f"Machine: {r['cpu']}, {r['cores']} cores, L3 {r['l3_bytes'] >> 20} MiB, "
              f"{r['mem_bytes'] >> 30} GiB; run {r['date']}; tiers {r['tiers']}; "
              f"OpenBLAS core {r['openblas_core']}; one thread.\n")
    elif r["bench"] == "bandwidth":
        print(f"Streaming read bandwidth (AVX2 sum over {r['buffer_bytes'] >> 20} MiB): "
              f"**{r['bw_gbps']:.1f} GB/s**\n")
print("| N | d | storage | tier | mode | µs/query | queries/s | GB/s | bw_fraction "
      "| FAISS µs | vs_faiss | vs_f32 | top1 | sim err |")
print("|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    if r["bench"] not in ("index_flat", "faiss_flat_ip"):
        continue
    tier = r["tier"] or "FAISS"
    mode = r["mode"] + (f" {r['batch']}" if r["batch"] else "")
    fa = r["faiss_ms_per_query"]
    print(f"| {r['n']} | {r['d']} | {r['storage']} | {tier} | {mode} "
          f"| {r['ms_per_query'] * 1000:.2f} | {r['queries_per_s']:.0f} | {r['gbps']:.1f} "
          f"| {r['bw_fraction']:.2f} | {fmt(fa * 1000 if fa else None, '.1f')} "
          f"| {fmt(r['vs_faiss'], '.2f')} | {fmt(r['vs_f32'], '.2f')} "
          f"| {r['top1_agreement']:.4f} | {r['sim_max_err']:.1e} |")
print("\n| target | tier | measured | limit | result |")
print("|---|---|---:|---:|---|")
for r in rows:
    if r["bench"] == "target":
        print(f"| {r['target']} | {r['tier']} | {r['value']:.3f} | {r['op']} {r['limit']} | {r['result']} |")
