#!/bin/bash
# SPDX-License-Identifier: MIT
# proftpd across the two domUs: in xtb-server proftpd-core's binary
# (unpacked into /opt/unpacked by the guest tree: the package conflicts
# with vsftpd) standalone, daemonizing as its unit starts it (`proftpd -c
# CONFIG`, Type=forking), a forked session per connection that chroots into
# the <Anonymous> root and switches uids; data with sendfile
# (apps-compat/proftpd's config, addresses on the bridge); in xtb-client
# curl.  Both under LD_PRELOAD=libxway.so.  Transfers of XTB_PROFTPD_MB
# each: upload over passive EPSV and active PORT, download over passive
# EPSV and active EPRT, and a listing; sha256 compared across the domains.
# Verdict: guest/appslib.sh.
set -u
role=$1
app=proftpd
PROFTPD=/opt/unpacked/proftpd-core/usr/sbin/proftpd
need=("$PROFTPD" /usr/bin/curl)
mb=${XTB_PROFTPD_MB:-8}
port=2122
pasv=40200
# TCP fallback reasons this workload accepts, with why (empty: none).
# (No left-channel since session 8: the control connection follows the
# fork of the session, DESIGN §7.2.)
# not-coresident / no-listener: a passive data connection made right
# after the PASV reply, before the session's new data listener reached
# curl's broker (the peer's listeners arrive through xenstore): curl's
# broker knows no xway listener at that address, both ends stay on TCP.
# no-offer / withdrawn: an active data connection is connected by the
# chrooted session (its shim offers nothing, curl's accept records
# no-offer) or, when an offer was made, not claimed in time (withdrawn).
ALLOW="not-coresident no-listener no-offer withdrawn"
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

size=$((mb * 1048576))
if [ "$role" = server ]; then
	missing=$(ldd "$PROFTPD" 2>&1 | grep 'not found')
	[ -z "$missing" ] || bad "proftpd's libraries are missing from the guest tree: $missing"
	mkdir -p "$d/ftp/pub"
	chown ftp:ftp "$d/ftp/pub"
	head -c "$size" /dev/urandom > "$d/ftp/pub/down.bin"
	chmod 0644 "$d/ftp/pub/down.bin"
	tb_signal proftpd/down-sha "$(sha "$d/ftp/pub/down.bin")"
	cat > "$d/proftpd.conf" <<-CFG
	ServerName "xway xen"
	ServerType standalone
	DefaultServer on
	Port $port
	DefaultAddress $TB_SELF_IP
	SocketBindTight on
	UseIPv6 off
	User nobody
	Group nogroup
	PidFile $d/proftpd.pid
	ScoreboardFile $d/proftpd.scoreboard
	DelayTable none
	WtmpLog off
	UseReverseDNS off
	AuthPAM off
	UseSendfile on
	SystemLog $d/proftpd.log
	TransferLog $d/xfer.log
	PassivePorts $pasv $((pasv + 20))
	AllowOverwrite on
	<Anonymous $d/ftp>
	  User ftp
	  Group $(id -gn ftp)
	  UserAlias anonymous ftp
	  RequireValidShell off
	  <Directory pub>
	    <Limit WRITE>
	      AllowAll
	    </Limit>
	  </Directory>
	</Anonymous>
	CFG
	"$PROFTPD" -t -c "$d/proftpd.conf" > "$d/proftpd-t.log" 2>&1 || bad "proftpd -t: $(tail -n 3 "$d/proftpd-t.log" | tr '\n' ' ')"
	"${XW[@]}" "$PROFTPD" -c "$d/proftpd.conf" > "$d/proftpd-start.log" 2>&1 \
		|| bad "proftpd did not start: $(tail -n 3 "$d/proftpd-start.log" | tr '\n' ' ')"
	wait_for 60 test -s "$d/proftpd.pid" || bad "proftpd wrote no pid file"
	fpid=$(cat "$d/proftpd.pid" 2> /dev/null); LISTENER_PIDS+=("$fpid")
	daemon_up proftpd "$fpid" $port
	serve_until proftpd/done
	up=$(tb_wait proftpd/up-sha 10)
	for f in up-epsv up-port; do check_sha "$d/ftp/pub/$f.bin" "$up" "$f.bin"; done
	kill -0 "$fpid" 2> /dev/null || bad "proftpd exited"
else
	head -c "$size" /dev/urandom > "$d/up.bin"
	tb_signal proftpd/up-sha "$(sha "$d/up.bin")"
	await_peer_listener proftpd/listening $port
	down=$(tb_wait proftpd/down-sha 10)
	url=ftp://$TB_PEER_IP:$port/pub
	ftp() { local what=$1; shift; shimmed "$what" "$d/curl.log" curl -sS --max-time 140 "$@"; }
	n0=$(nic_bytes)
	ftp "passive EPSV upload" -T "$d/up.bin" "$url/up-epsv.bin"
	ftp "passive EPSV download" -o "$d/down-epsv.bin" "$url/down.bin" \
		&& check_sha "$d/down-epsv.bin" "$down" "passive EPSV download (sendfile)"
	ftp "active PORT upload" -P "$TB_SELF_IP" --disable-eprt -T "$d/up.bin" "$url/up-port.bin"
	ftp "active EPRT download" -P "$TB_SELF_IP" -o "$d/down-eprt.bin" "$url/down.bin" \
		&& check_sha "$d/down-eprt.bin" "$down" "active EPRT download (sendfile)"
	ftp "listing" -l "$url/" > "$d/list"
	for f in down.bin up-epsv.bin up-port.bin; do
		grep -qxF "$f" "$d/list" || bad "the listing lacks $f: $(tr '\n' ' ' < "$d/list")"
	done
	client_done
fi
conclude $((4 * size))
