#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Redis under the shim: a forking key-value server.  redis-server is
# daemonized as its Debian package can run it (daemonize yes, pid file, the
# redis user, private dir, loopback port).  BGSAVE forks a child that
# inherits every client socket, closes them and exits: the shim must not
# let that child's exit tear down or de-accelerate the parent's
# connections.  Steps: redis-cli --pipe mass-loads 4000 keys of known,
# incompressible values (~4 MiB, 4 of 256 KiB); kv.py holds 4 connections
# open through 4 BGSAVEs (rdb-key-save-delay keeps each child alive while
# the clients write and read), a redis-benchmark load runs during a fifth
# one; then every value is verified byte for byte through the same
# connections (same CLIENT ID) and new ones, the broker must still show the
# long-lived connections accelerated and open, and check_accel covers all.
. "$(dirname "$0")/../lib/common.sh"
compat_init redis
compat_need redis-server redis-cli redis-benchmark
here=$(cd "$(dirname "$0")" && pwd)

port=$(free_port)
mkdir -p "$T/data"
chown redis:redis "$T/data"
cat > "$T/redis.conf" <<CONF
bind 127.0.0.1
port $port
unixsocket ""
protected-mode yes
daemonize yes
pidfile $T/data/redis.pid
logfile $T/data/redis.log
dir $T/data
dbfilename dump.rdb
save ""
appendonly no
rdbcompression no
# Keeps each BGSAVE child alive ~0.4 s (4000 keys x 100 us), so the clients
# demonstrably work while it holds copies of their sockets.
rdb-key-save-delay 100
CONF
chmod 0644 "$T/redis.conf"
COMPAT_PIDFILES+=("$T/data/redis.pid")
ln -s "$T/data/redis.log" "$T/log/redis-server"
# setpriv like the packaged unit's User=redis; the shim rides along in the
# environment through setpriv and redis' own daemonizing fork.
bounded 30 setpriv --reuid=redis --regid=redis --init-groups \
	redis-server "$T/redis.conf" >"$T/log/redis-start" 2>&1 || fail "redis-server did not start"
wait_file "$T/data/redis.pid" 30
pid=$(head -n1 "$T/data/redis.pid" | tr -dc 0-9)
wait_port "$port" 30 "$pid"
preloaded "$pid" redis-server
[ "$(stat -c %U "/proc/$pid")" = redis ] || fail "redis-server runs as $(stat -c %U "/proc/$pid"), not redis"

python3 "$here/kv.py" gen "$T" || fail "data generation failed"
load=$(stat -c%s "$T/load.resp")
bounded 120 redis-cli -h 127.0.0.1 -p "$port" --pipe <"$T/load.resp" >"$T/log/pipe" 2>&1 \
	|| fail "redis-cli --pipe failed: $(tail -n 3 "$T/log/pipe")"
grep -q 'errors: 0, replies: 4000' "$T/log/pipe" || fail "mass insertion: $(tail -n 1 "$T/log/pipe")"
log "redis-cli --pipe loaded 4000 keys ($load bytes of commands)"

if [ "$MODE" = shim ]; then ctl=("$B/xwayctl" "$SOCK"); else ctl=(- -); fi
bounded 200 python3 "$here/kv.py" fork "$port" 4 "${ctl[@]}" >"$T/kv.out" 2>"$T/log/kv" \
	|| fail "kv.py: $(tail -n 2 "$T/log/kv")"
cat "$T/log/kv" >&2
read -r kv_c2s kv_s2c < "$T/kv.out"

# A fifth BGSAVE with redis-benchmark (8 clients) running across it.
r=$(bounded 30 redis-cli -h 127.0.0.1 -p "$port" BGSAVE) || fail "redis-cli BGSAVE failed"
[[ $r == "Background saving started"* ]] || fail "BGSAVE: $r"
bounded 120 redis-benchmark -h 127.0.0.1 -p "$port" -c 8 -n 20000 -d 256 -t set,get,lpush,lpop -q \
	>"$T/log/benchmark" 2>&1 || fail "redis-benchmark failed: $(tail -n 2 "$T/log/benchmark")"
[ "$(grep -c 'requests per second' "$T/log/benchmark")" = 4 ] || fail "redis-benchmark: $(tail -n 2 "$T/log/benchmark")"
log "redis-benchmark: $(tr '\r' '\n' < "$T/log/benchmark" | grep 'requests per second' | tr '\n' ' ')"
for ((i = 0; i < 300; i++)); do
	p=$(bounded 30 redis-cli -h 127.0.0.1 -p "$port" INFO persistence | tr -d '\r')
	grep -qx 'rdb_bgsave_in_progress:0' <<<"$p" && break
	sleep 0.2
done
grep -qx 'rdb_last_bgsave_status:ok' <<<"$p" || fail "the fifth BGSAVE did not finish ok"
[ -s "$T/data/dump.rdb" ] || fail "no dump.rdb written"
log "5 BGSAVEs done, dump.rdb $(stat -c%s "$T/data/dump.rdb") bytes"

# Payload floors: the mass load up plus kv.py's own traffic each way
# (redis-benchmark adds more on top).  Connections: pipe + kv.py (6) +
# 3 redis-cli + benchmark's 8 at least.
check_accel $((load + kv_c2s)) "$kv_s2c" 15
pass "redis $(pkg_version redis-server)"
