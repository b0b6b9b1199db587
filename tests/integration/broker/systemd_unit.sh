#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The generated systemd unit: `systemd-analyze verify` accepts it, it is
# Type=notify with the hardening the design asks for, and @SBINDIR@ was
# substituted.  Skips (77) when systemd-analyze is missing.
set -u
B=${B:-build}
unit=$B/xwayd.service
[ -f "$unit" ] || { echo "SKIP: $unit not built"; exit 77; }
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze missing"; exit 77; }
T=$(mktemp -d /tmp/xway-unit.XXXXXX)
trap 'rm -rf "$T"' EXIT
# verify needs the ExecStart binary to exist: point it at the built one.
sed "s|^ExecStart=[^ ]*|ExecStart=$(realpath "$B/xwayd")|" "$unit" >"$T/xwayd.service"
out=$(systemd-analyze verify "$T/xwayd.service" 2>&1)
rc=$?
# Warnings about the container's own units are not ours; only lines that
# name our unit count.
ours=$(printf '%s\n' "$out" | grep -F "xwayd.service" || true)
if [ $rc != 0 ] && [ -n "$ours" ]; then
	echo "FAIL: systemd-analyze verify:"; printf '%s\n' "$out"; exit 1
fi
[ -z "$ours" ] || { echo "FAIL: systemd-analyze complains:"; printf '%s\n' "$ours"; exit 1; }
for want in 'Type=notify' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'RuntimeDirectory=xway' \
	    'RuntimeDirectoryMode=0755' 'ProtectHome=yes' 'PrivateTmp=yes' 'DevicePolicy=closed' \
	    'RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6' 'CapabilityBoundingSet='; do
	grep -qxF "$want" "$unit" || { echo "FAIL: unit lacks '$want'"; exit 1; }
done
grep -q '@SBINDIR@' "$unit" && { echo "FAIL: @SBINDIR@ not substituted"; exit 1; }
grep -q '^ExecStart=/.*/xwayd --foreground$' "$unit" || { echo "FAIL: ExecStart"; exit 1; }
echo "PASS (systemd-analyze: ${out:-no complaints})"
