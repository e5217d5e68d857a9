#!/usr/bin/env bash
# fetch-faiss-src.sh DEST - put Debian's own faiss source (c_api/ included) in
# DEST, so that CMake can build the FAISS C API that libfaiss-dev lacks.
# Uses `apt-get source faiss`; adds a deb-src entry for bookworm main when the
# machine has none (root only). Idempotent: does nothing if DEST is complete.
set -euo pipefail
dest=${1:?usage: fetch-faiss-src.sh DEST}
if [ -f "$dest/c_api/Index_c.cpp" ]; then
    exit 0
fi
have_src() {
    grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/
}
if ! have_src; then
    if [ "$(id -u)" != 0 ]; then
        echo "fetch-faiss-src: no deb-src entry configured; run as root or add one for bookworm main" >&2
        exit 1
    fi
    echo "fetch-faiss-src: adding a deb-src entry for bookworm main" >&2
    cat > /etc/apt/sources.list.d/semcache-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -q >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Unpacked by dpkg-source, so Debian's patches are applied as for libfaiss.a.
if ! apt-get source -q faiss >&2; then
    # The package lists may predate the deb-src entry: refresh once, retry.
    apt-get update -q >&2
    apt-get source -q faiss >&2
fi
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
