#!/usr/bin/env bash
# fuzz.sh [SECONDS] - builds the libFuzzer targets (tests/fuzz/) with clang,
# ASan and UBSan into build-fuzz/, and runs each for SECONDS (default 60) on
# a copy of its seed corpus in a temp dir. A crash, leak or sanitizer report
# fails the target; its input is kept (the path is printed) so that it can
# become a tests/fuzz/regress/<target>/ file. Prints a line per target and
# "N passed, N failed"; exits non-zero when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
jobs=$(nproc 2>/dev/null || echo 2)
targets="fuzz_dispatch fuzz_mp fuzz_embed_table fuzz_prices fuzz_config fuzz_persist fuzz_http fuzz_proxy"

echo "== fuzz build (clang, libFuzzer + ASan + UBSan) =="
mkdir -p build-fuzz
if ! CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSEMCACHE_FUZZ=ON -DSEMCACHE_FAISS=OFF >build-fuzz/build.log 2>&1 ||
   ! cmake --build build-fuzz -j"$jobs" --target $targets >>build-fuzz/build.log 2>&1; then
    tail -n 40 build-fuzz/build.log
    echo "fuzz: build failed (build-fuzz/build.log)"
    exit 1
fi

work=$(mktemp -d /tmp/semcache-fuzz.XXXXXX)
keep=0
pass=0
fail=0
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in $targets; do
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
    cp tests/fuzz/corpus/$t/* "$work/$t/corpus/" 2>/dev/null || true
    # -rss_limit_mb: the targets keep small caches; 2 GB means a leak.
    build-fuzz/$t "$work/$t/corpus" -max_total_time="$secs" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$t/artifacts/" >"$work/$t/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log")
    cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -n 1)
    if [ $rc -eq 0 ] && ! grep -q -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:' "$work/$t/log"; then
        pass=$((pass + 1))
        printf '%-18s ok      %s runs in %ss, %s, corpus %s files\n' "$t" \
            "${execs:-?}" "$secs" "${cov:-cov: ?}" \
            "$(ls "$work/$t/corpus" | wc -l)"
    else
        fail=$((fail + 1))
        keep=1
        printf '%-18s FAILED  rc %s after %s runs; log %s, input %s\n' "$t" \
            "$rc" "${execs:-?}" "$work/$t/log" \
            "$(ls "$work/$t/artifacts"/* 2>/dev/null | head -n 1)"
        grep -m 5 -E 'ERROR:|runtime error:|SUMMARY|fuzz_[a-z_]*: ' "$work/$t/log" | sed 's/^/    /'
    fi
done
[ $keep -eq 0 ] && rm -rf "$work"
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
