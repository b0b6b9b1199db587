#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# stdio on an accelerated connection handed over by exec (shim/stdio.c):
# a shimmed server forks and execs xway-stdio-echo with the accepted socket
# as fds 0 and 1, as inetd and `git daemon` do; the service uses only
# fgets(stdin)/printf(stdout), whose bytes glibc moves without calling the
# interposed read/write; then the same with streams the service opens with
# fdopen(), and with dprintf().  A shimmed client sends 2000 lines and must get
# every echo and the final count, on the channel: xwayctl shows the
# connection closed on backend local with the bytes, and the kernel TCP
# payload both shims report is ~0.  Before, the echoes went out on TCP
# while the client read the channel: it waited forever.
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
ECHO=$B/tests/shim/xway-stdio-echo
for f in "$B/xwayd" "$B/xwayctl" "$ECHO" "$ECHO-fortify"; do
	[ -x "$f" ] || { echo "SKIP: $f not built"; exit 77; }
done
command -v python3 >/dev/null || { echo "SKIP: python3 missing"; exit 77; }

priv_broker_env stdio
xwayd_up

cat >"$T/srv.py" <<'PY'
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0)); s.listen(4)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
pid = os.fork()
if pid == 0:
    os.dup2(c.fileno(), 0); os.dup2(c.fileno(), 1)
    c.close(); s.close()
    os.execv(sys.argv[1], sys.argv[1:])
c.close()
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st))
PY
cat >"$T/cli.py" <<'PY'
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.settimeout(30)
lines = [("line %d %s\n" % (i, "x" * (i % 97))).encode() for i in range(2000)]
want = b"".join(b"echo:" + l for l in lines) + b"bye 2000\n"
c.sendall(b"".join(lines)); c.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = c.recv(65536)
    if not b:
        break
    got.extend(b)
sys.exit(0 if bytes(got) == want else 1)
PY
one() {
	# Records of this run only: a later run's server may get a port an
	# earlier run's had (the broker keeps finished records).
	t0=$(date +%s.%N)
	rm -f "$T/port"
	shimmed python3 "$T/srv.py" "$ECHO" "$@" >"$T/port" 2>"$T/srv.log" &
	spid=$!
	for _ in $(seq 1 250); do [ -s "$T/port" ] && break; sleep 0.02; done
	port=$(head -n1 "$T/port")
	[ -n "$port" ] || fail "server did not start"
	shimmed python3 "$T/cli.py" "$port" 2>"$T/cli.log" || fail "the client did not get every echo back (${1:-std streams})"
	wait "$spid" || fail "server or service exit status"
	spid=
	for _ in $(seq 1 100); do
		"$B/xwayctl" connections --json --socket "$SOCK" >"$T/conns.json" 2>&1
		python3 - "$T/conns.json" "$port" "$t0" <<'PY' && break
import json, sys
d = [c for c in json.load(open(sys.argv[1]))["connections"]
     if c["server"]["addr"].endswith(":" + sys.argv[2]) and c["started"] >= float(sys.argv[3])]
ok = len(d) == 1 and d[0]["state"] == "closed" and d[0]["backend"] == "local" and \
     d[0]["bytes_s2c"] > 100000 and all(
         d[0][s][k] is not None and d[0][s][k] < 4096
         for s in ("client", "server") for k in ("tcp_bytes_sent", "tcp_bytes_received"))
sys.exit(0 if ok else 1)
PY
		sleep 0.05
	done || true
	python3 - "$T/conns.json" "$port" "$t0" <<'PY' || { cat "$T/conns.json"; fail "not accelerated, or TCP payload"; }
import json, sys
d = [c for c in json.load(open(sys.argv[1]))["connections"]
     if c["server"]["addr"].endswith(":" + sys.argv[2]) and c["started"] >= float(sys.argv[3])]
assert len(d) == 1 and d[0]["state"] == "closed" and d[0]["backend"] == "local", d
assert d[0]["bytes_s2c"] > 100000, d
for s in ("client", "server"):
    for k in ("tcp_bytes_sent", "tcp_bytes_received"):
        assert d[0][s][k] is not None and d[0][s][k] < 4096, (s, k, d)
PY
}
one
one fdopen
one dprintf
# As distributions build it (_FORTIFY_SOURCE=2: __dprintf_chk, __fprintf_chk).
ECHO=$B/tests/shim/xway-stdio-echo-fortify
one dprintf
one
echo "PASS: stdio service exec'd on an accelerated connection (std streams, fdopen, dprintf; also fortified): every echo on the channel"
