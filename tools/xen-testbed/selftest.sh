#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check that xtb-vchan, the Xen test bed's transfer probe, verifies what it
# claims, using its TCP transport on loopback (no Xen needed): a clean
# transfer with odd sizes passes on both ends with equal checksums; a single
# flipped byte is caught at its exact offset and both ends exit non-zero;
# bad arguments are refused with a clear message.  The vchan transport is
# exercised by `make test-xen`.
set -u
bin=${B:-build}/xen-testbed/xtb-vchan
[ -x "$bin" ] || { echo "selftest: $bin not built" >&2; exit 1; }
tmp=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi; }

# A free port: let the kernel pick one, release it, and retry on a clash.
run_pair() { # run_pair NAME CLIENT-ARGS...
	local name=$1 port try; shift
	for try in 1 2 3 4 5; do
		port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
		timeout 60 "$bin" server --tcp 127.0.0.1 "$port" --timeout 50 \
			> "$tmp/$name.s" 2> "$tmp/$name.se" &
		spid=$!
		timeout 60 "$bin" client --tcp 127.0.0.1 "$port" --timeout 50 "$@" \
			> "$tmp/$name.c" 2> "$tmp/$name.ce"
		crc=$?
		wait "$spid"; src=$?; spid=
		grep -q 'Address already in use' "$tmp/$name.se" || return 0
	done
}
kv() { sed -n "s/^$2=//p" "$tmp/$1"; }

run_pair good --bytes 5000011 --pings 300 --msg 1000 --seed 7
check "clean transfer: client exits 0" '[ $crc = 0 ]'
check "clean transfer: server exits 0" '[ $src = 0 ]'
check "clean transfer: all bytes arrived" '[ "$(kv good.s xfer_bytes)" = 5000011 ]'
check "clean transfer: both verified" '[ "$(kv good.s xfer_ok)$(kv good.c xfer_ok)" = 11 ]'
check "clean transfer: checksums agree" \
	'[ -n "$(kv good.s xfer_checksum)" ] && [ "$(kv good.s xfer_checksum)" = "$(kv good.c xfer_checksum)" ]'
check "ping-pong: 300 echoes checked" '[ "$(kv good.c pp_count)$(kv good.c pp_ok)" = 3001 ]'

run_pair bad --bytes 3000000 --pings 10 --seed 9 --corrupt-at 1234567
check "flipped byte: server fails" '[ $src != 0 ]'
check "flipped byte: client fails" '[ $crc != 0 ]'
check "flipped byte: found at its offset" '[ "$(kv bad.s xfer_first_bad_offset)" = 1234567 ]'

run_pair seedless --bytes 100 --pings 1 --seed 0 --corrupt-at 99
check "flipped last byte: caught" '[ "$(kv seedless.s xfer_first_bad_offset)" = 99 ] && [ $src != 0 ]'

"$bin" client --tcp 127.0.0.1 1 --msg 4 > /dev/null 2> "$tmp/args"
check "bad --msg refused" '[ $? = 2 ] && grep -q -- "--msg must be" "$tmp/args"'
"$bin" client --vchan x /p > /dev/null 2> "$tmp/args"
check "bad domid refused" '[ $? = 2 ] && grep -q "bad domid" "$tmp/args"'
"$bin" > /dev/null 2>&1
check "no arguments: usage, exit 2" '[ $? = 2 ]'

echo "selftest: $fails failed"
[ $fails = 0 ]
