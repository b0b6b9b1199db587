#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sockperf under the shim (a netperf stand-in): TCP ping-pong and one-way
# throughput with 60000-byte messages, so reads and writes are partial and
# message boundaries fall anywhere in the stream.  sockperf numbers every
# message and checks the numbers on receipt: the check is zero dropped,
# duplicated or out-of-order messages and as many replies as requests.
# The server uses its default: recvfrom on a blocking socket per client.
. "$(dirname "$0")/../lib/common.sh"
compat_init sockperf
compat_need sockperf

MSG=60000
run_client() {  # name args...: run a client, keep its output in $T/log/name
	local name=$1; shift
	bounded 60 sockperf "$@" --tcp -i 127.0.0.1 -m $MSG -t 3 \
		>"$T/log/$name" 2>&1 || fail "sockperf $name exited $? ($(tail -n 3 "$T/log/$name" | tr '\n' ' '))"
}

p1=$(free_port)
compat_bg server sockperf server --tcp -i 127.0.0.1 -p "$p1"
wait_port "$p1" 15 "$BG_PID"
preloaded "$BG_PID" "sockperf server"

run_client pp ping-pong -p "$p1"
run_client tp throughput -p "$p1"

# Parse the reports: integrity counters and the payload each way.
python3 - "$T/log" $MSG >"$T/payload" <<'PY' || fail "sockperf reported lost, duplicated or reordered messages"
import re, sys
d, msg = sys.argv[1], int(sys.argv[2])
c2s = s2c = 0
for name in ("pp",):
    t = open(f"{d}/{name}").read()
    # The whole run (warm-up included) for the payload: one request may be
    # in flight when the timer fires.  The valid-duration window must match.
    m = re.search(r"\[Total Run\].*SentMessages=(\d+); ReceivedMessages=(\d+)", t)
    v = re.search(r"\[Valid Duration\].*SentMessages=(\d+); ReceivedMessages=(\d+)", t)
    q = re.search(r"# dropped messages = (\d+); # duplicated messages = (\d+); "
                  r"# out-of-order messages = (\d+)", t)
    if not m or not v or not q:
        sys.exit(f"{name}: no summary in the report")
    sent, rcvd = int(m.group(1)), int(m.group(2))
    print(f"{name}: sent={sent} received={rcvd} dropped/dup/ooo={q.groups()}", file=sys.stderr)
    if (sent == 0 or not 0 <= sent - rcvd <= 1 or v.group(1) != v.group(2)
            or any(int(x) for x in q.groups())):
        sys.exit(f"{name}: integrity check failed")
    c2s += sent * msg; s2c += rcvd * msg
t = open(f"{d}/tp").read()
m = re.search(r"Total of (\d+) messages sent", t)
if not m or int(m.group(1)) == 0:
    sys.exit("tp: no messages sent")
print(f"tp: sent={m.group(1)}", file=sys.stderr)
c2s += int(m.group(1)) * msg
print(c2s, s2c)
PY
read -r c2s s2c < "$T/payload"
[ -n "${c2s:-}" ] || fail "sockperf reports could not be parsed"
check_accel "$c2s" "$s2c" 2
pass "sockperf $(pkg_version sockperf), payload c2s=$c2s s2c=$s2c"
