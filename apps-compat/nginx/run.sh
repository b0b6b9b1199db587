#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nginx under the shim: the edge-triggered web server of shared/HAZARDS.md
# (epoll EPOLLET + EPOLLRDHUP, accept4(NONBLOCK), sendfile + writev with
# TCP_CORK from `tcp_nopush`, non-blocking recv).  nginx is started as its
# Debian unit does (`nginx -g 'daemon on; master_process on;'`: the start
# process forks the master and exits, the master forks 2 workers running
# as www-data), private prefix, loopback port.  curl under the shim fetches
# a 48 MiB and an 8 MiB file (>= 50 MiB of static files; sendfile), both
# twice over one keep-alive connection, 40 small pages over one keep-alive
# connection and 20 with `Connection: close`; every body's sha256 is
# compared.  Then acceleration is checked for every connection.
. "$(dirname "$0")/../lib/common.sh"
compat_init nginx
compat_need nginx curl

port=$(free_port)
www=$T/www
mkdir -p "$www/small" "$T/run" "$T/tmp"
chown www-data:www-data "$T/tmp"
mkdata "$www/big.bin" 48
mkdata "$www/mid.bin" 8
for ((i = 0; i < 40; i++)); do
	head -c $((200 + i * 97)) /dev/urandom | base64 > "$www/small/p$i.html"
done
chmod -R a+rX "$www"
cat > "$T/nginx.conf" <<CONF
user www-data;
worker_processes 2;
pid $T/run/nginx.pid;
error_log $T/log/nginx-error info;
events {
	use epoll;
	worker_connections 256;
	multi_accept on;
}
http {
	types { text/html html; application/octet-stream bin; }
	access_log $T/log/nginx-access;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 30;
	keepalive_requests 1000;
	client_body_temp_path $T/tmp/body;
	proxy_temp_path $T/tmp/proxy;
	fastcgi_temp_path $T/tmp/fastcgi;
	uwsgi_temp_path $T/tmp/uwsgi;
	scgi_temp_path $T/tmp/scgi;
	server {
		listen 127.0.0.1:$port;
		root $www;
	}
}
CONF
chmod 0644 "$T/nginx.conf"
COMPAT_PIDFILES+=("$T/run/nginx.pid")
bounded 30 nginx -p "$T" -c "$T/nginx.conf" -g 'daemon on; master_process on;' \
	>"$T/log/nginx-start" 2>&1 || fail "nginx did not start: $(tail -n 3 "$T/log/nginx-start")"
wait_file "$T/run/nginx.pid" 30
master=$(head -n1 "$T/run/nginx.pid" | tr -dc 0-9)
wait_port "$port" 30 "$master"
preloaded "$master" nginx-master+
for w in $(ps -o pid= --ppid "$master"); do
	[ "$(stat -c %U "/proc/$w")" = www-data ] || fail "nginx worker $w runs as $(stat -c %U "/proc/$w")"
done

url=http://127.0.0.1:$port
# Keep-alive: one curl, four big transfers on one connection.
bounded 120 curl -sS --fail -o "$T/big1" "$url/big.bin" -o "$T/mid1" "$url/mid.bin" \
	-o "$T/big2" "$url/big.bin" -o "$T/mid2" "$url/mid.bin" \
	-w '%{num_connects}\n' >"$T/big.conns" 2>"$T/log/curl-big" \
	|| fail "curl big files: $(tail -n 2 "$T/log/curl-big")"
same "$www/big.bin" "$T/big1" "48 MiB GET"
same "$www/big.bin" "$T/big2" "48 MiB GET again on the same connection"
same "$www/mid.bin" "$T/mid1" "8 MiB GET"
same "$www/mid.bin" "$T/mid2" "8 MiB GET again on the same connection"
[ "$(awk '{s += $1} END {print s}' "$T/big.conns")" = 1 ] || fail "keep-alive: curl opened $(awk '{s += $1} END {print s}' "$T/big.conns") connections for 4 files"

# Small pages: 40 on one keep-alive connection, then 20 with Connection: close.
args=(); for ((i = 0; i < 40; i++)); do args+=(-o "$T/ka$i" "$url/small/p$i.html"); done
bounded 60 curl -sS --fail "${args[@]}" -w '%{num_connects}\n' >"$T/ka.conns" 2>"$T/log/curl-small" \
	|| fail "curl small pages (keep-alive): $(tail -n 2 "$T/log/curl-small")"
[ "$(awk '{s += $1} END {print s}' "$T/ka.conns")" = 1 ] || fail "keep-alive: 40 pages took $(awk '{s += $1} END {print s}' "$T/ka.conns") connections"
args=(); for ((i = 0; i < 20; i++)); do args+=(-o "$T/cl$i" "$url/small/p$i.html"); done
bounded 60 curl -sS --fail -H 'Connection: close' "${args[@]}" -w '%{num_connects}\n' >"$T/cl.conns" 2>>"$T/log/curl-small" \
	|| fail "curl small pages (close): $(tail -n 2 "$T/log/curl-small")"
[ "$(awk '{s += $1} END {print s}' "$T/cl.conns")" = 20 ] || fail "Connection: close: 20 pages took $(awk '{s += $1} END {print s}' "$T/cl.conns") connections"
for ((i = 0; i < 40; i++)); do
	cmp -s "$www/small/p$i.html" "$T/ka$i" || fail "small page $i (keep-alive) differs"
	[ $i -lt 20 ] && { cmp -s "$www/small/p$i.html" "$T/cl$i" || fail "small page $i (close) differs"; }
done
log "40 small pages on one keep-alive connection, 20 with Connection: close: byte-exact"

big=$(( 2 * $(stat -c%s "$www/big.bin") + 2 * $(stat -c%s "$www/mid.bin") ))
# 1 + 1 + 20 connections; downloads only (requests are small).
check_accel 1000 "$big" 22
pass "nginx $(pkg_version nginx)"
