#!/bin/sh
# install-deps.sh -- the Debian 12 packages xksproxy needs to build, test and
# run its demo.  Idempotent.
set -eu
pkgs="build-essential autoconf automake libtool pkg-config
libevent-dev libssl-dev libp11-kit-dev libjson-c-dev libcmocka-dev libsystemd-dev
softhsm2 opensc p11-kit curl openssl python3 ca-certificates procps"
[ "${XKS_EXTRA_PKGS:-}" ] && pkgs="$pkgs $XKS_EXTRA_PKGS"
missing=
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
