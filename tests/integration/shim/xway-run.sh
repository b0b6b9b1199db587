#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check tools/xway-run: options validated (exit 2 + one clear line),
# variables exported, libxway.so APPENDED to LD_PRELOAD as an absolute
# path, and a note for a statically linked target.
set -u
cd "$(dirname "$0")/../../.."
B=${B:-build}
run=tools/xway-run
lib=$(readlink -f "$B/libxway.so")
fail() { echo "FAIL: $*"; exit 1; }
# An ASan build of the library needs the ASan runtime first in LD_PRELOAD:
# xway-run appends, so the runtime goes in front as "another preload".
other=/lib/other.so; base=""
if nm -D "$lib" 2>/dev/null | grep -q __asan_init; then
	other=$(${CC:-cc} -print-file-name=libasan.so); base=$other
	export ASAN_OPTIONS=detect_leaks=0
fi

out=$($run --lib "$lib" --ring-size 12x true 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "bad --ring-size '12x'" || fail "bad ring size: rc $rc: $out"
out=$($run --lib "$lib" --nope true 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "unknown option" || fail "unknown option: $out"
out=$($run --lib "$lib" --ports 5000-,x true 2>&1); rc=$?
[ $rc = 2 ] || fail "bad ports accepted"
out=$(LD_PRELOAD=$other $run --lib "$B/libxway.so" --log-level debug --ports '5000-6000,!22' \
	--ring-size 64k --spin-us 5 sh -c 'echo "$LD_PRELOAD|$XWAY_LOG_LEVEL|$XWAY_PORTS|$XWAY_RING_SIZE|$XWAY_SPIN_US"' 2>/dev/null)
[ "$out" = "$other $lib|debug|5000-6000,!22|64k|5" ] || fail "exports: '$out'"
out=$(LD_PRELOAD=$base $run --lib "$lib" --disable sh -c 'echo $XWAY_DISABLE'); [ "$out" = 1 ] || fail "--disable"
static=""
for s in /sbin/ldconfig /usr/sbin/ldconfig /bin/busybox; do
	if [ -x "$s" ] && ! readelf -l "$s" 2>/dev/null | grep -q INTERP; then static=$s; break; fi
done
if [ -n "$static" ]; then
	out=$(LD_PRELOAD=$base $run --lib "$lib" "$static" --help 2>&1 >/dev/null | head -1)
	echo "$out" | grep -q "statically linked" || fail "no static note for $static: $out"
fi
echo "xway-run: ok"
