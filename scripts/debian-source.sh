#!/usr/bin/env bash
# debian-source.sh PKG - unpack Debian's source package PKG (`apt-get
# source`, so Debian's own patches are applied) into the current directory.
# When apt knows no source for PKG, refreshes the package lists once and,
# if that is not enough, adds a deb-src entry (root only) for this release's
# main component, on the Debian mirror the machine's own `deb` entries use.
set -euo pipefail
pkg=${1:?usage: debian-source.sh PKG}

# Whether apt has a source package for PKG: asks apt itself, so a deb-src
# line that is disabled, for another suite, or in a file apt ignores does
# not count.
known() {
    [ -n "$(apt-cache showsrc "$pkg" 2>/dev/null)" ]
}

# The first Debian mirror of an enabled `deb` entry (one-line or deb822),
# leaving out the security archive; deb.debian.org when there is none.
mirror() {
    local m
    m=$( {
        grep -hsE '^deb[[:space:]]' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list |
            sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*//'
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            # One stanza per paragraph; enabled deb stanzas' URIs only.
            awk 'BEGIN { RS = ""; FS = "\n" }
                 {
                     deb = 0; off = 0; uris = ""
                     for (i = 1; i <= NF; i++) {
                         if ($i ~ /^Types:/ && $i ~ /[[:space:]]deb([[:space:]]|$)/) deb = 1
                         if ($i ~ /^Enabled:[[:space:]]*no/) off = 1
                         if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[[:space:]]*/, "", uris) }
                     }
                     if (deb && !off) { n = split(uris, u, /[[:space:]]+/); for (j = 1; j <= n; j++) print u[j] }
                 }' "$f"
        done
    } | grep -E '/debian/?$' | grep -v -- '-security' | head -n1)
    echo "${m:-http://deb.debian.org/debian}"
}

if ! known; then
    if [ "$(id -u)" != 0 ]; then
        echo "debian-source: apt knows no source package $pkg; run as root, or add a deb-src entry for this release's main component" >&2
        exit 1
    fi
    # The package lists may predate a deb-src entry: refresh once.
    apt-get update -q >&2
fi
if ! known; then
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    uri=$(mirror)
    echo "debian-source: adding a deb-src entry: $uri $suite main" >&2
    cat > /etc/apt/sources.list.d/semcache-deb-src.sources <<SRC
Types: deb-src
URIs: $uri
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -q >&2
fi
apt-get source -q "$pkg" >&2
