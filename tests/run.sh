#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run every test program and script given, keep going on failure, and print
# one summary line.  Usage: run.sh BIN... -- SCRIPT...
# Criterion programs are run directly (never under LD_PRELOAD: the runner
# talks to its workers over nanomsg).  A script exiting 77 is a skip.
set -u
# The tests assert acceleration.  A broker reply slower than the shim's
# 100 ms default (HELLO, LISTEN_ADD) makes a connection fall back to TCP,
# correctly, and a loaded machine (a CI rehearsal beside the Xen test bed's
# QEMU) got there: accel echo went to TCP once.  The default itself is the
# config test's and slow-broker.sh's business.
export XWAY_BROKER_TIMEOUT_MS=${XWAY_BROKER_TIMEOUT_MS:-1000}
pass=0; fail=0; skip=0; failed=()
scripts=0
for t in "$@"; do
	if [ "$t" = "--" ]; then scripts=1; continue; fi
	echo "---- $t"
	t0=$(date +%s%N)
	if [ $scripts = 1 ]; then bash "$t"; rc=$?; else "$t" --jobs=1 ; rc=$?; fi
	dt=$(( ($(date +%s%N) - t0) / 1000000 ))
	case $rc in
	0)  pass=$((pass+1)); echo "---- PASS $t (${dt} ms)" ;;
	77) skip=$((skip+1)); echo "---- SKIP $t" ;;
	*)  fail=$((fail+1)); failed+=("$t"); echo "---- FAIL $t (exit $rc)" ;;
	esac
done
[ $fail -gt 0 ] && printf 'failed: %s\n' "${failed[@]}"
echo "tests: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
