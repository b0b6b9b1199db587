#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the Debian packages xway needs to build and test, and only those
# that are missing.  Safe to run again; works on a brand-new Debian 12 as root.
#   tools/install-deps.sh            build + unit/integration test deps
#   tools/install-deps.sh compat     + the applications of apps-compat/
#   tools/install-deps.sh xen        + the Xen test bed (QEMU, debootstrap)
set -euo pipefail

base=(build-essential pkg-config libglib2.0-dev libcriterion-dev libxen-dev
      iproute2 python3 procps psmisc systemd clang llvm libclang-rt-14-dev
      util-linux coreutils)
# proftpd-core conflicts with vsftpd (both Provide+Conflict ftp-server), so
# only its libraries are installed here; apps-compat/proftpd/run.sh unpacks
# the proftpd-core .deb into a private directory (apt-get download).
compat=(openssh-server openssh-client apache2 apache2-utils curl vsftpd lftp
        telnetd inetutils-telnet openbsd-inetd mariadb-server mariadb-client
        samba smbclient iperf3 sockperf libhiredis0.14 libmemcached11
        libmemcachedutil2 libhashkit2 libpcre2-posix3 libidn2-0 libcap2 libacl1
        libsodium23 libnsl2 libattr1 libpam0g libssl3 redis-server redis-tools nginx)
xen=(qemu-system-x86 debootstrap e2fsprogs)

want=("${base[@]}")
for extra in "$@"; do
	case "$extra" in
	compat) want+=("${compat[@]}") ;;
	xen)    want+=("${xen[@]}") ;;
	*) echo "install-deps: unknown set '$extra' (known: compat xen)" >&2; exit 2 ;;
	esac
done

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
		|| missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "install-deps: nothing missing"; exit 0; }

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Services shipped by these packages must not start on install: the tests
# start their own copies on private ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
