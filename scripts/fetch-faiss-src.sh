#!/usr/bin/env bash
# fetch-faiss-src.sh DEST - put Debian's own faiss source (c_api/ included) in
# DEST, so that CMake can build the FAISS C API that libfaiss-dev lacks.
# Uses `apt-get source faiss` (scripts/debian-source.sh). Idempotent: does
# nothing if DEST is complete.
set -euo pipefail
dest=${1:?usage: fetch-faiss-src.sh DEST}
if [ -f "$dest/c_api/Index_c.cpp" ]; then
    exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Unpacked by dpkg-source, so Debian's patches are applied as for libfaiss.a.
"$here/debian-source.sh" faiss
src=$(find . -maxdepth 1 -type d -name 'faiss-*' | head -n 1)
if [ -z "$src" ] || [ ! -f "$src/c_api/Index_c.cpp" ]; then
    echo "fetch-faiss-src: the faiss source package has no c_api/" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
# Only the C API sources are needed; the C++ headers come from libfaiss-dev.
cp -r "$src/c_api" "$dest.tmp/"
cp "$src/LICENSE" "$dest.tmp/" 2>/dev/null || true
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "fetch-faiss-src: FAISS C API sources in $dest" >&2
