#!/usr/bin/env bash
# setup.sh - install every dependency, build semcached, and start it on its
# defaults in the foreground (Ctrl-C or SIGTERM stops it cleanly).
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
exec build/semcached "$@"
