#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# telnet under the shim: openbsd-inetd with a private inetd.conf listening on
# a private loopback port, spawning inetutils telnetd per connection with the
# socket on fd 0-2 through exec (SO_OOBINLINE, TCGETS on the socket,
# select).  inetd runs with -i (in the foreground, as under its systemd
# unit, and without its system pid file) and -E: without -E inetd launders
# LD_PRELOAD out of its children's environment.  telnetd runs login.sh
# (-E) instead of /bin/login, so no password is needed: the program puts
# the pty in raw mode, reads base64 lines typed by the client and answers
# with their sha256, then prints a file as base64; the real telnet client
# is driven through pipes by drive.py.  1 MiB up, 4 MiB down.
. "$(dirname "$0")/../lib/common.sh"
compat_init telnet
compat_need inetd /usr/sbin/telnetd telnet

here=$(cd "$(dirname "$0")" && pwd)
cp "$here/login.sh" "$T/login.sh"; chmod 0755 "$T/login.sh"
mkdata "$T/up.bin" 1
mkdata "$T/down.bin" 4
nlines=$(base64 < "$T/up.bin" | wc -l)
port=$(free_port)
# inetd splits its argument list on blanks with no quoting: telnetd gets a
# one-word login program that passes the arguments on.
printf '#!/bin/sh\nexec %s %s %s\n' "$T/login.sh" "$nlines" "$T/down.bin" > "$T/login"
chmod 0755 "$T/login"
echo "127.0.0.1:$port stream tcp nowait root /usr/sbin/telnetd telnetd -h -E $T/login" > "$T/inetd.conf"
compat_bg inetd inetd -d -i -E "$T/inetd.conf"
wait_port "$port" 15 "$BG_PID"
preloaded "$BG_PID" inetd

bounded 120 python3 "$here/drive.py" "$T/up.bin" "$T/down.got" "$(sha "$T/down.bin")" 90 \
	-- telnet 127.0.0.1 "$port" 2>"$T/log/drive" || fail "$(tail -n 1 "$T/log/drive")"
log "$(tail -n 1 "$T/log/drive")"
same "$T/down.bin" "$T/down.got" "telnet download"

up=$(stat -c%s "$T/up.bin"); down=$(stat -c%s "$T/down.bin")
# Base64 adds a third on top of the bytes counted here.
check_accel "$up" "$down" 1
pass "telnetd $(pkg_version inetutils-telnetd), openbsd-inetd $(pkg_version openbsd-inetd)"
