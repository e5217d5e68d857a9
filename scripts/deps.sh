#!/usr/bin/env bash
# deps.sh - install the Debian packages semcached builds and tests with.
# Idempotent and quick when everything is there; needs root otherwise.
# iproute2 (ss) and openssl are for tests: the keep-alive checks count a
# server's connections with ss, the TLS tests make certificates with
# openssl; a minimal Debian 12 image has neither, and those checks would
# be skipped, not failed.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libopenblas-dev liblapack-dev libfaiss-dev libnng-dev libmsgpack-dev
      libjansson-dev libxxhash-dev libcurl4-openssl-dev dpkg-dev python3
      python3-msgpack libmbedtls-dev patch iproute2 openssl)
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
