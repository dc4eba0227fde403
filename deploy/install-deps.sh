#!/bin/sh
# Install every build and test dependency of hypha from Debian 12 packages.
# Idempotent: packages already present are not touched, and apt-get runs only
# when something is missing. Needs root (or sudo) only in that case.
set -eu

PKGS="build-essential cmake pkg-config libev-dev libyaml-dev libjansson-dev \
libcmocka-dev libssl-dev python3 clang libclang-rt-14-dev socat procps man-db \
stunnel4 openssl mypy systemd util-linux"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all dependencies present"
    exit 0
fi

echo "install-deps: installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-deps: missing packages:$missing; run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
echo "install-deps: done"
