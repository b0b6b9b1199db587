#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# apache2 under the shim, once with the prefork MPM and once with event,
# started as apachectl does (`apache2 -k start`: daemonizes, forks workers
# that drop to www-data; event workers run ~25 threads on epoll).  Listen
# socket with `AcceptFilter http data` (TCP_DEFER_ACCEPT, Debian's default
# on Linux).  Per MPM: a 64 MiB static download (mmap + writev), a 64 MiB
# WebDAV PUT upload read back with GET, small pages several to a keep-alive
# connection and one per connection (curl, each body checked), and ab load
# with and without keep-alive (ab checks every response's length).
. "$(dirname "$0")/../lib/common.sh"
compat_init apache2
compat_need apache2 curl ab

MB=64
MODS=/usr/lib/apache2/modules
mkdir -p "$T/www/up"
mkdata "$T/www/big.bin" $MB
for i in $(seq 1 20); do head -c $((i * 997)) /dev/urandom > "$T/www/page$i.html"; done
echo '<html><body>xway</body></html>' > "$T/www/index.html"
chown www-data:www-data "$T/www/up"
size=$(stat -c%s "$T/www/big.bin")
mkdata "$T/up.bin" $MB
c2s=0; s2c=0; nconn=0

run_mpm() {
	local mpm=$1 port dir url i urls=() outs=()
	port=$(free_port)
	dir="$T/apache-$mpm"; mkdir -p "$dir/run" "$dir/dav"
	chown www-data:www-data "$dir/dav"   # the lock DB is written by workers
	cat > "$dir/apache2.conf" <<CFG
ServerRoot $dir
ServerName 127.0.0.1
DefaultRuntimeDir $dir/run
PidFile $dir/apache2.pid
Mutex file:$dir/run default
LoadModule mpm_${mpm}_module $MODS/mod_mpm_${mpm}.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule mime_module $MODS/mod_mime.so
LoadModule dir_module $MODS/mod_dir.so
LoadModule dav_module $MODS/mod_dav.so
LoadModule dav_fs_module $MODS/mod_dav_fs.so
User www-data
Group www-data
Listen 127.0.0.1:$port
AcceptFilter http data
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
Timeout 60
LimitRequestBody 0
StartServers 2
ErrorLog $T/log/apache-$mpm-error
LogLevel warn
TypesConfig /etc/mime.types
DocumentRoot $T/www
DirectoryIndex index.html
DavLockDB $dir/dav/lock
<Directory />
    Require all denied
</Directory>
<Directory $T/www>
    Require all granted
</Directory>
<Directory $T/www/up>
    Dav On
</Directory>
CFG
	apache2 -t -d "$dir" -f "$dir/apache2.conf" >"$T/log/apache-$mpm-t" 2>&1 \
		|| fail "apache2 -t ($mpm): $(cat "$T/log/apache-$mpm-t")"
	COMPAT_PIDFILES+=("$dir/apache2.pid")
	xw apache2 -d "$dir" -f "$dir/apache2.conf" -k start >"$T/log/apache-$mpm-start" 2>&1 \
		|| fail "apache2 -k start ($mpm): $(cat "$T/log/apache-$mpm-start")"
	wait_file "$dir/apache2.pid" 15
	wait_port "$port" 15
	preloaded "$(cat "$dir/apache2.pid")" "apache2 $mpm+"
	url="http://127.0.0.1:$port"

	# Big download, then upload with PUT and read it back.
	bounded 120 curl -sSf -o "$T/big-$mpm.bin" "$url/big.bin" 2>>"$T/log/curl" \
		|| fail "$mpm: GET big.bin: $(tail -n1 "$T/log/curl")"
	same "$T/www/big.bin" "$T/big-$mpm.bin" "$mpm: GET 64 MiB"
	bounded 120 curl -sSf -T "$T/up.bin" "$url/up/up-$mpm.bin" -o /dev/null 2>>"$T/log/curl" \
		|| fail "$mpm: PUT: $(tail -n1 "$T/log/curl")"
	same "$T/up.bin" "$T/www/up/up-$mpm.bin" "$mpm: PUT 64 MiB (as stored by apache)"
	bounded 120 curl -sSf -o "$T/back-$mpm.bin" "$url/up/up-$mpm.bin" 2>>"$T/log/curl" \
		|| fail "$mpm: GET uploaded file: $(tail -n1 "$T/log/curl")"
	same "$T/up.bin" "$T/back-$mpm.bin" "$mpm: GET of the uploaded file"

	# Twenty small pages on one keep-alive connection, then one per
	# connection (curl -H 'Connection: close').
	for i in $(seq 1 20); do urls+=("$url/page$i.html"); outs+=(-o "$T/ka-$mpm-$i"); done
	bounded 60 curl -sSf "${outs[@]}" "${urls[@]}" 2>>"$T/log/curl" \
		|| fail "$mpm: keep-alive pages: $(tail -n1 "$T/log/curl")"
	for i in $(seq 1 20); do
		cmp -s "$T/www/page$i.html" "$T/ka-$mpm-$i" || fail "$mpm: keep-alive page$i differs"
		bounded 30 curl -sSf -H 'Connection: close' -o "$T/nk-$mpm-$i" "$url/page$i.html" 2>>"$T/log/curl" \
			|| fail "$mpm: page$i without keep-alive: $(tail -n1 "$T/log/curl")"
		cmp -s "$T/www/page$i.html" "$T/nk-$mpm-$i" || fail "$mpm: page$i (no keep-alive) differs"
	done
	log "$mpm: 20 pages on one keep-alive connection and 20 on their own: ok"

	# ab: 400 requests, 4 concurrent, with and without keep-alive.
	local n=400 ka
	for ka in "" -k; do
		bounded 120 ab -q $ka -n $n -c 4 "$url/page7.html" >"$T/log/ab-$mpm$ka" 2>&1 \
			|| fail "$mpm: ab $ka failed: $(tail -n 3 "$T/log/ab-$mpm$ka")"
		grep -q '^Non-2xx responses' "$T/log/ab-$mpm$ka" && fail "$mpm: ab $ka: non-2xx responses"
		grep -q "^Complete requests: *$n\$" "$T/log/ab-$mpm$ka" \
			&& grep -q '^Failed requests: *0$' "$T/log/ab-$mpm$ka" \
			|| fail "$mpm: ab $ka: $(grep -E '^(Complete|Failed) requests' "$T/log/ab-$mpm$ka" | tr '\n' ' ')"
	done
	log "$mpm: ab $n requests with and without keep-alive: ok"

	compat_stop_pid "$(cat "$dir/apache2.pid")"
	grep -E '\[(emerg|crit|alert)\]|segfault|exit signal' "$T/log/apache-$mpm-error" \
		&& fail "$mpm: apache logged a crash"
	# Channel payload: PUT up; two big GETs down; pages both ways are extra.
	c2s=$((c2s + size)); s2c=$((s2c + 2 * size))
	# 3 big + 1 keep-alive + 20 single + ab (400 + at least 4 keep-alive).
	nconn=$((nconn + 3 + 1 + 20 + n + 4))
}

run_mpm prefork
run_mpm event
check_accel $c2s $s2c $nconn
pass "apache2 $(pkg_version apache2), prefork + event"
