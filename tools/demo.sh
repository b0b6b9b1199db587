#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's main job (`make demo`): start the broker xwayd in local mode,
# run a TCP server and client under the shim, show with xwayctl that their
# connections were accelerated (channel bytes, and the kernel TCP payload
# counters of the same sockets), and how much faster than plain TCP the
# same program ran, measured in the same run.  Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
SECS=${DEMO_SECS:-2}
ROUNDS=${DEMO_ROUNDS:-20000}
CPUS=$([ "$(nproc)" -ge 2 ] && echo 0,1 || echo 0,0)
for f in "$B/xwayd" "$B/xwayctl" "$B/libxway.so" "$B/xway-tcpbench"; do
	[ -e "$f" ] || { echo "demo: $f missing: run make first" >&2; exit 2; }
done

T=$(mktemp -d /tmp/xway-demo.XXXXXX)
XWAYD_PID=
cleanup() {
	[ -n "$XWAYD_PID" ] && { kill "$XWAYD_PID" 2>/dev/null || true; wait "$XWAYD_PID" 2>/dev/null || true; }
	rm -rf "$T"
}
trap cleanup EXIT
SOCK=$T/xwayd.sock

echo "== 1. the broker: $B/xwayd --foreground --socket $SOCK (local mode)"
"$B/xwayd" --foreground --socket "$SOCK" >"$T/xwayd.log" 2>&1 &
XWAYD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "demo: xwayd did not start:"; cat "$T/xwayd.log"; exit 1; }
"$B/xwayctl" status --socket "$SOCK"

echo
echo "== 2. plain kernel TCP: $B/xway-tcpbench (server and client, loopback)"
"$B/xway-tcpbench" -t "$SECS" -n "$ROUNDS" -c "$CPUS" | tee "$T/plain"

echo
echo "== 3. the same program under the shim: tools/xway-run $B/xway-tcpbench"
tools/xway-run --lib "$B/libxway.so" --broker-sock "$SOCK" \
	"$B/xway-tcpbench" -t "$SECS" -n "$ROUNDS" -c "$CPUS" | tee "$T/shim"

echo
echo "== 4. what the broker saw: xwayctl connections (the first rows; the short-connection"
echo "      test makes one connection per request)"
"$B/xwayctl" connections --socket "$SOCK" >"$T/conns.txt"
head -n 6 "$T/conns.txt"
[ "$(wc -l <"$T/conns.txt")" -le 6 ] || echo "   ... $(($(wc -l <"$T/conns.txt") - 1)) connections in all"
"$B/xwayctl" connections --json --socket "$SOCK" >"$T/conns.json"

echo
echo "== 5. verdict"
python3 - "$T/conns.json" "$T/plain" "$T/shim" <<'PY'
import json, sys
sys.path.insert(0, "tools/bench")
from results import load
conns = json.load(open(sys.argv[1]))["connections"]
plain, shim = load(sys.argv[2]), load(sys.argv[3])
acc = [c for c in conns if c["backend"] == "local" and c["state"] in ("accelerated", "closed")]
chan = sum(c["bytes_c2s"] + c["bytes_s2c"] for c in acc)
tcp = 0
for c in acc:
    for side in ("client", "server"):
        for k in ("tcp_bytes_sent", "tcp_bytes_received"):
            v = c[side].get(k)
            tcp += v or 0
print(f"accelerated connections: {len(acc)} of {len(conns)}")
print(f"bytes on the channel:    {chan:,}")
print(f"TCP payload bytes seen by the kernel on those sockets: {tcp:,}")
rows = [("stream_65536", "stream, 64 KiB writes", False),
        ("stream_64", "stream, 64 B writes", False),
        ("pingpong_p50_us", "ping-pong 64 B, p50 latency", True),
        ("churn_conn_s", "short connections per second", False)]
for k, name, lower in rows:
    if k in plain and k in shim and plain[k] > 0 and shim[k] > 0:
        f = plain[k] / shim[k] if lower else shim[k] / plain[k]
        if f >= 1:
            print(f"{name:30} {f:6.1f}x faster than kernel TCP (same run)")
        else:
            print(f"{name:30} {f:6.2f}x of kernel TCP (same run: slower; the set-up "
                  "costs two broker round trips)")
ok = len(acc) > 0 and chan > 0 and tcp <= chan // 100
print("RESULT:", "accelerated" if ok else "NOT accelerated (see the table above for the reason)")
sys.exit(0 if ok else 1)
PY
