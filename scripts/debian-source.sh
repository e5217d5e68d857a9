#!/usr/bin/env bash
# debian-source.sh PKG - unpack Debian's source package PKG (`apt-get
# source`, so Debian's own patches are applied) into the current directory.
# Adds a deb-src entry for bookworm main when the machine has none (root
# only); refreshes the package lists once if the first try fails.
set -euo pipefail
pkg=${1:?usage: debian-source.sh PKG}
# Only the files apt reads: sources.list.d also holds *.save, *.dpkg-old or
# disabled copies, whose deb-src lines apt ignores.
have_src() {
    grep -rqsE --include='*.list' --include='*.sources' \
        '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/
}
if ! have_src; then
    if [ "$(id -u)" != 0 ]; then
        echo "debian-source: no deb-src entry configured; run as root or add one for bookworm main" >&2
        exit 1
    fi
    echo "debian-source: adding a deb-src entry for bookworm main" >&2
    cat > /etc/apt/sources.list.d/semcache-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -q >&2
fi
if ! apt-get source -q "$pkg" >&2; then
    # The package lists may predate the deb-src entry: refresh once, retry.
    apt-get update -q >&2
    apt-get source -q "$pkg" >&2
fi
