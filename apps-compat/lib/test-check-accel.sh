#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Self-test of check_accel.py, the acceleration verdict of every apps-compat
# case: a fake xwayctl prints fixed JSON, and the checker must accept only
# the fully accelerated fixture and reject each way a connection can fail
# (fallback, wrong backend, short channel bytes, payload on kernel TCP,
# unknown TCP counters, too few connections, bad JSON, xwayctl error).
# Addresses are from TEST-NET-1, so no live socket seen by `ss` can match.
# Needs no root, no broker and no network; wired into `make test`.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/xwayctl" <<'SH'
#!/bin/sh
# fake xwayctl: connections --json --socket FILE -> prints FILE
[ "$1" = connections ] && [ "$2" = --json ] && [ "$3" = --socket ] || { echo "bad usage: $*" >&2; exit 2; }
[ -f "$4" ] || { echo "cannot connect to $4" >&2; exit 1; }
cat "$4"
SH
chmod +x "$tmp/xwayctl"

conn() {  # id state backend c2s s2c tcp_c_sent tcp_s_sent [reason]
	printf '{"id":"%016x","state":"%s","backend":"%s","reason":"%s","detail":"",' "$1" "$2" "$3" "${8:-}"
	printf '"client":{"addr":"192.0.2.1:%d","pid":10,"uid":0,"tcp_bytes_sent":%s,"tcp_bytes_received":%s},' \
		$((40000 + $1)) "$6" "$7"
	printf '"server":{"addr":"192.0.2.2:5000","pid":11,"uid":0,"tcp_bytes_sent":%s,"tcp_bytes_received":%s},' "$7" "$6"
	printf '"bytes_c2s":%s,"bytes_s2c":%s,"started":1,"ended":2}' "$4" "$5"
}
fixture() {  # name conn-json...
	local name=$1 sep=""; shift
	{ printf '{"connections":['; for c in "$@"; do printf '%s%s' "$sep" "$c"; sep=,; done; printf ']}\n'; } > "$tmp/$name"
}
M=$((64 << 20))
fixture good "$(conn 1 closed local $M 1000 0 0)" "$(conn 2 accelerated local 500 $M 0 0)"
fixture fallback "$(conn 1 closed local $M $M 0 0)" "$(conn 2 fallback tcp 0 0 10 10 broker-down)"
fixture xen "$(conn 1 closed xen $M $M 0 0)"
fixture pending "$(conn 1 pending local $M $M 0 0)"
fixture short "$(conn 1 closed local $((M - 1)) $M 0 0)"
fixture ontcp "$(conn 1 closed local $M $M $((M / 25)) 0)"
fixture unknown "$(conn 1 closed local $M $M null null)"
fixture slack "$(conn 1 closed local $M $M 4000 0)"
printf '{"connections": 5}\n' > "$tmp/badjson"
printf 'not json\n' > "$tmp/notjson"

pass=0; fail=0
expect() {  # want(0|1) fixture args...
	local want=$1 f=$2 rc; shift 2
	python3 "$here/check_accel.py" --xwayctl "$tmp/xwayctl" --socket "$tmp/$f" --settle 0 "$@" \
		>"$tmp/out" 2>&1
	rc=$?
	if { [ "$want" = 0 ] && [ $rc = 0 ]; } || { [ "$want" = 1 ] && [ $rc != 0 ]; }; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1)); echo "FAIL: $f $* exited $rc, wanted $( [ "$want" = 0 ] && echo success || echo failure)"
		sed 's/^/    /' "$tmp/out"
	fi
}
expect 0 good --c2s $M --s2c $M --min-conns 2
expect 1 good --c2s $M --s2c $M --min-conns 3          # too few connections
expect 1 good --c2s $((M + 501)) --s2c $M               # payload not covered
fixture active "$(conn 1 closed local 0 $M 0 0)" "$(conn 2 closed local $M 0 0 0)"
expect 1 active --c2s $((2 * M)) --s2c 0                # per direction: not covered
expect 0 active --c2s $((2 * M)) --s2c 0 --any-direction
expect 1 active --c2s $((2 * M)) --s2c 1 --any-direction
expect 1 fallback --c2s $M --s2c $M                     # stayed on TCP
expect 0 fallback --c2s $M --s2c $M --allow-tcp broker-down
expect 1 fallback --c2s $M --s2c $M --allow-tcp setup-chan
expect 1 xen --c2s $M --s2c $M                          # not the local backend
expect 1 pending --c2s $M --s2c $M                      # never resolved
expect 1 short --c2s $M --s2c $M
expect 1 ontcp --c2s $M --s2c $M                        # 2% of the payload on TCP
expect 1 unknown --c2s $M --s2c $M                      # no TCP counters at all
expect 0 slack --c2s $M --s2c $M                        # within the budget
expect 1 badjson --c2s 0 --s2c 0
expect 1 notjson --c2s 0 --s2c 0
expect 1 missing --c2s 0 --s2c 0                        # xwayctl fails
echo "check_accel: $pass passed, $fail failed"
[ $fail = 0 ]
