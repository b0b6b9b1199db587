#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the apps-compat cases (all, or those named) one after the other, keep
# going on failure, print one line per case and the summary line
# "compat: N passed, N failed, N skipped".  Exit 0 only if every case passed.
#   apps-compat/run-all.sh                 every case, shim mode
#   XWAY_COMPAT_MODE=plain apps-compat/run-all.sh ssh apache2
set -u
here=$(cd "$(dirname "$0")" && pwd)
all=(ssh apache2 vsftpd proftpd telnet mysql samba iperf3 sockperf redis nginx)
if [ $# -gt 0 ]; then cases=("$@"); else cases=("${all[@]}"); fi
mode=${XWAY_COMPAT_MODE:-shim}
pass=0; fail=0; skip=0; lines=()
for c in "${cases[@]}"; do
	if [ ! -x "$here/$c/run.sh" ]; then
		echo "run-all: no case '$c' (known: ${all[*]})" >&2
		fail=$((fail + 1)); lines+=("compat-$c: FAIL - no such case"); continue
	fi
	echo "==== $c ($mode mode)"
	t0=$(date +%s)
	# Each case bounds its own steps; this is the backstop for a hang.
	timeout -k 10 300 "$here/$c/run.sh"
	rc=$?
	dt=$(( $(date +%s) - t0 ))
	case $rc in
	0)  pass=$((pass + 1)); lines+=("compat-$c: PASS [$mode] (${dt}s)") ;;
	77) skip=$((skip + 1)); lines+=("compat-$c: SKIP [$mode] (${dt}s)") ;;
	124|137) fail=$((fail + 1)); lines+=("compat-$c: FAIL [$mode] (${dt}s) - timed out") ;;
	*)  fail=$((fail + 1)); lines+=("compat-$c: FAIL [$mode] (${dt}s) - exit $rc") ;;
	esac
done
echo "==== summary"
printf '%s\n' "${lines[@]}"
echo "compat: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
