#!/bin/bash
# SPDX-License-Identifier: MIT
# telnet across the two domUs: in xtb-server inetutils-inetd in the
# foreground (-d, as its init script's daemon minus the fork) with a private
# inetd.conf, which forks and execs inetutils telnetd per connection with
# the socket on fd 0-2; in xtb-client the inetutils telnet client fed
# through a pipe.  Both under LD_PRELOAD=libxway.so (inetutils-inetd
# passes its environment on to telnetd).  telnetd runs a login program
# (-E) instead of /bin/login: it puts the pty in raw mode, says READY,
# reads the client's base64 lines and answers with their sha256, then
# prints a file as base64 between BEGIN and END (XTB_TELNET_KB up and 4x
# that down through the pty).  Verdict: guest/appslib.sh.
set -u
role=$1
app=telnet
need=(/usr/sbin/inetutils-inetd /usr/sbin/telnetd /usr/bin/inetutils-telnet)
kb=${XTB_TELNET_KB:-256}
port=2323
# TCP fallback reasons this workload accepts, with why (empty: none).
# (No left-channel since session 8: the channel follows inetd's fork and
# the exec of telnetd with the socket as fd 0-2, DESIGN §7.2.)
# withdrawn / no-offer: an offer decided before the claim (emulated
# timing), both ends on TCP.
ALLOW="withdrawn no-offer"
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

up=$((kb * 1024)); down=$((4 * kb * 1024))
if [ "$role" = server ]; then
	head -c "$down" /dev/urandom > "$d/down.bin"
	tb_signal telnet/down-sha "$(sha "$d/down.bin")"
	# inetd splits its server arguments on blanks: one word, the program
	# that telnetd runs on the pty, with everything it needs inside.
	cat > "$d/login" <<-EOF
	#!/bin/sh
	stty raw -echo
	printf 'READY\n'
	head -n "\$(cat $d/nlines)" | tr -d '\r\000' | base64 -d > $d/up.got 2> /dev/null
	printf 'UPSHA %s\n' "\$(sha256sum < $d/up.got | cut -c1-64)"
	printf 'BEGIN\n'
	base64 -w 76 $d/down.bin
	printf 'END\n'
	sleep 1
	EOF
	chmod 0755 "$d/login"
	tb_wait telnet/nlines 600 > "$d/nlines" || bad "no line count from the client"
	echo "$TB_SELF_IP:$port stream tcp nowait root /usr/sbin/telnetd telnetd -h -E $d/login" > "$d/inetd.conf"
	"${XW[@]}" /usr/sbin/inetutils-inetd -d -p "$d/inetd.pid" "$d/inetd.conf" > "$d/inetd.log" 2>&1 &
	ipid=$!; LISTENER_PIDS+=("$ipid")
	daemon_up inetd "$ipid" $port
	serve_until telnet/done
	want=$(tb_wait telnet/up-sha 10)
	check_sha "$d/up.got" "$want" "upload typed through telnet"
	kill -0 "$ipid" 2> /dev/null || bad "inetd exited"
else
	head -c "$up" /dev/urandom > "$d/up.bin"
	base64 -w 76 "$d/up.bin" > "$d/up.b64"
	tb_signal telnet/up-sha "$(sha "$d/up.bin")"
	tb_signal telnet/nlines "$(wc -l < "$d/up.b64")"
	await_peer_listener telnet/listening $port
	want=$(tb_wait telnet/down-sha 10)
	# The client's input: the upload once the remote said READY, then
	# nothing until END arrived (an EOF would end the session early).
	# END is a whole line: about one run in 15 has a base64 line of the
	# download that starts with "END" (18396 lines, 1/64^3 each), and
	# waiting for '^END' alone ended those sessions in the middle of the
	# download (seen once in a CI rehearsal, session 14).
	feed() {
		wait_for 120 grep -q READY "$d/out" || return
		cat "$d/up.b64"
		wait_for 300 grep -qE $'^END\r?$' "$d/out"
	}
	n0=$(nic_bytes)
	if [ ${#err[@]} = 0 ]; then
		feed | timeout 400 "${XW[@]}" /usr/bin/inetutils-telnet "$TB_PEER_IP" $port > "$d/out" 2> "$d/client.log"
		log "telnet exited $?: $(tail -n 2 "$d/client.log" | tr '\n' ' ')"
	fi
	tr -d '\r\000' < "$d/out" > "$d/out.txt"
	grep -q "^UPSHA $(sha "$d/up.bin")\$" "$d/out.txt" && log "upload: the remote's sha256 matches" \
		|| bad "upload: the remote's sha256 differs or is missing: $(grep '^UPSHA' "$d/out.txt")"
	sed -n '/^BEGIN$/,/^END$/p' "$d/out.txt" | sed '1d;$d' | base64 -d > "$d/down.got" 2> /dev/null
	grep -q '^END$' "$d/out.txt" || bad "download: no END (the session stopped early)"
	check_sha "$d/down.got" "$want" "download printed through telnet"
	client_done
fi
conclude $((up + down))
