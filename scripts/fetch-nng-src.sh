#!/usr/bin/env bash
# fetch-nng-src.sh DEST - put Debian's own nng source (with Debian's patches)
# in DEST and apply scripts/patches/nng-1.5.2-*.patch, so that CMake can
# build the nng that semcached links (cmake/NngPatched.cmake). Uses `apt-get
# source nng` (scripts/debian-source.sh). Idempotent: does nothing if DEST
# holds the sources with the patches there are now (DEST/.semcache-patched
# lists their SHA-256 sums); a patch added or changed fetches afresh.
set -euo pipefail
dest=${1:?usage: fetch-nng-src.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
want=$(cd "$here/patches" && sha256sum nng-*.patch)
if [ -f "$dest/.semcache-patched" ] &&
    [ "$(cat "$dest/.semcache-patched")" = "$want" ]; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$here/debian-source.sh" nng
src=$(find . -maxdepth 1 -type d -name 'nng-*' | head -n 1)
if [ -z "$src" ] || [ ! -f "$src/src/sp/transport/ipc/ipc.c" ]; then
    echo "fetch-nng-src: the nng source package was not unpacked" >&2
    exit 1
fi
version=${src#./nng-}
for p in "$here"/patches/nng-"$version"-*.patch; do
    [ -e "$p" ] || continue
    echo "fetch-nng-src: applying $(basename "$p")" >&2
    patch -d "$src" -p1 --forward --batch --no-backup-if-mismatch < "$p" >&2
done
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp" "$dest"
cp -r "$src" "$dest.tmp"
printf '%s\n' "$want" >"$dest.tmp/.semcache-patched"
mv "$dest.tmp" "$dest"
echo "fetch-nng-src: nng $version sources in $dest" >&2
