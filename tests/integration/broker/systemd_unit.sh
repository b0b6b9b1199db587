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
	    'RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6' 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_PTRACE'; do
	grep -qxF "$want" "$unit" || { echo "FAIL: unit lacks '$want'"; exit 1; }
done
grep -q '@SBINDIR@' "$unit" && { echo "FAIL: @SBINDIR@ not substituted"; exit 1; }
grep -q '^ExecStart=/.*/xwayd --foreground$' "$unit" || { echo "FAIL: ExecStart"; exit 1; }
# dom0's unit (xway-xen-setup watch): verified the same way.
dunit=$B/xway-xen-setup.service
[ -f "$dunit" ] || { echo "FAIL: $dunit not built"; exit 1; }
sed "s|^ExecStart=[^ ]*|ExecStart=$(realpath tools/xen-setup/xway-xen-setup)|" "$dunit" \
	> "$T/xway-xen-setup.service"
dout=$(systemd-analyze verify "$T/xway-xen-setup.service" 2>&1)
dours=$(printf '%s\n' "$dout" | grep -F "xway-xen-setup.service" || true)
[ -z "$dours" ] || { echo "FAIL: systemd-analyze complains:"; printf '%s\n' "$dours"; exit 1; }
grep -q '^ExecStart=/.*/xway-xen-setup watch$' "$dunit" || { echo "FAIL: dom0 unit ExecStart"; exit 1; }
grep -qxF 'ExecCondition=/bin/grep -q control_d /proc/xen/capabilities' "$dunit" \
	|| { echo "FAIL: dom0 unit not limited to dom0"; exit 1; }
echo "PASS (systemd-analyze: ${out:-no complaints}; dom0 unit: ${dout:-no complaints})"
