#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make bench`: the channel benchmark (xway-chanbench: channel vs AF_UNIX
# socketpair), then xway-tcpbench on kernel TCP and under the shim
# (LD_PRELOAD=$B/libxway.so with a private xwayd), printing ratios against
# kernel TCP measured in the same run.  The shim half is skipped with a
# message when libxway.so or xwayd is missing or the connections were not
# accelerated.  Environment: B (build dir, default build), BENCH_SECS
# (per stream, default 1), BENCH_ROUNDS (ping-pongs, default 20000),
# BENCH_CPUS (tcpbench placement SERVER,CLIENT; default 0,1 when two CPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
SECS=${BENCH_SECS:-1}
ROUNDS=${BENCH_ROUNDS:-20000}
ncpu=$(nproc)
CPUS=${BENCH_CPUS:-$([ "$ncpu" -ge 2 ] && echo 0,1 || echo 0,0)}

for f in "$B/xway-chanbench" "$B/xway-tcpbench"; do
	[ -x "$f" ] || { echo "run-bench: $f missing (run make first)" >&2; exit 2; }
done

echo "== machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== channel layer: $B/xway-chanbench -t $SECS -n $ROUNDS"
"$B/xway-chanbench" -t "$SECS" -n "$ROUNDS"

T=$(mktemp -d /tmp/xway-bench.XXXXXX)
XWAYD_PID=
cleanup() {
	if [ -n "$XWAYD_PID" ]; then
		kill "$XWAYD_PID" 2>/dev/null || true
		wait "$XWAYD_PID" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT

echo
echo "== TCP, kernel: $B/xway-tcpbench -t $SECS -n $ROUNDS -c $CPUS"
timeout 600 "$B/xway-tcpbench" -t "$SECS" -n "$ROUNDS" -c "$CPUS" | tee "$T/plain"

shim_skip() { echo; echo "== TCP under the shim: SKIPPED: $*"; exit 0; }
[ -f "$B/libxway.so" ] || shim_skip "$B/libxway.so does not exist yet"
[ -x "$B/xwayd" ] || shim_skip "$B/xwayd does not exist yet (the shim needs a broker)"
[ -x "$B/xwayctl" ] || shim_skip "$B/xwayctl does not exist yet (cannot check acceleration)"

SOCK="$T/xwayd.sock"
"$B/xwayd" --foreground --socket "$SOCK" >"$T/xwayd.log" 2>&1 &
XWAYD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || shim_skip "private xwayd did not start (log: $(head -c 300 "$T/xwayd.log"))"

LIB=$(readlink -f "$B/libxway.so")
echo
echo "== TCP under the shim: LD_PRELOAD=$LIB $B/xway-tcpbench -t $SECS -n $ROUNDS -c $CPUS"
timeout 600 env LD_PRELOAD="$LIB" XWAY_BROKER_SOCK="$SOCK" \
	"$B/xway-tcpbench" -t "$SECS" -n "$ROUNDS" -c "$CPUS" | tee "$T/shim"

"$B/xwayctl" connections --json --socket "$SOCK" >"$T/conns.json" 2>"$T/xwayctl.err" || true
accel=$(python3 - "$T/conns.json" <<'PY'
import json, sys
try:
    conns = json.load(open(sys.argv[1])).get("connections", [])
except Exception:
    conns = []
ok = [c for c in conns if c.get("backend") == "local" and not c.get("reason")
      and c.get("state") in ("accelerated", "closed")
      and c.get("bytes_c2s", 0) + c.get("bytes_s2c", 0) > 0]
print(f"{len(ok)}/{len(conns)}")
PY
)
echo "   accelerated connections (private broker): $accel"
case "$accel" in
0/*|"") shim_skip "the shim did not accelerate the connections ($accel); ratios would compare TCP with TCP" ;;
esac

# compare PLAIN SHIM [KEY...]: the ratio table of two xway-tcpbench outputs.
compare() { python3 tools/bench/results.py table "$@"; }

echo
echo "== shim vs kernel TCP (same run)"
compare "$T/plain" "$T/shim"

# xway-tcpbench sets TCP_NODELAY, under which kernel TCP sends every 64 B
# write as a segment; with Nagle on (-N) the kernel coalesces them, the
# harder baseline for small writes.  Stream rows only (so only a token
# ping-pong, -n 100, whose figures are not shown).
echo
echo "== 64 B writes with Nagle on (xway-tcpbench -N), kernel TCP then the shim"
timeout 600 "$B/xway-tcpbench" -N -t "$SECS" -n 100 -c "$CPUS" >"$T/plainN"
timeout 600 env LD_PRELOAD="$LIB" XWAY_BROKER_SOCK="$SOCK" \
	"$B/xway-tcpbench" -N -t "$SECS" -n 100 -c "$CPUS" >"$T/shimN"
compare "$T/plainN" "$T/shimN" stream_64 stream_65536
