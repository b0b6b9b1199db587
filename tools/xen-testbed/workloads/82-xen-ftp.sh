#!/bin/bash
# SPDX-License-Identifier: MIT
# vsftpd across the two domUs: in xtb-server `vsftpd CONFIG` in the
# foreground as its unit runs it (Type=simple), standalone, sessions made by
# raw clone() into new IPC and network namespaces (isolate defaults),
# anonymous sessions chrooted, seccomp_sandbox=NO (apps-compat/vsftpd's
# config, addresses on the bridge); in xtb-client curl.  Both under
# LD_PRELOAD=libxway.so.  Transfers of XTB_FTP_MB each: upload over passive
# EPSV and over active EPRT (the server connects back to a listener in the
# client domU), download over EPSV, PASV and active PORT, and a listing;
# sha256 compared across the domains.  The xwayd in Xen mode, the verdict
# and its rules are those of 80-xen-ssh (common part in guest/appslib.sh).
set -u
role=$1
app=ftp
need=(/usr/sbin/vsftpd /usr/bin/curl)
mb=${XTB_FTP_MB:-8}
port=2121
pasv=40100
# TCP fallback reasons this workload accepts, with why (empty: none).
# Every connection follows vsftpd's processes on the Xen channel: the
# control connection its clone()s (session and pre-login processes), the
# passive data connections accepted by the privileged process and handed
# to the session by SCM_RIGHTS (its broker maps the grants again for the
# session), the active ones connected by it and handed over while their
# offer is pending (the gntalloc descriptor and the decision channel go
# with them; docs/DESIGN.md §7.2).
# not-coresident: a passive data connection made right after the PASV
# reply, before vsftpd's new data listener reached curl's broker (the
# peer's listeners arrive through xenstore): curl's broker knows no xway
# listener at that address and both ends stay on TCP.
# no-offer: the same connection seen from vsftpd's side (its CLAIM finds
# no offer: curl's shim made none).  Restored after the session-9 change
# had dropped it with the SCM_RIGHTS gaps: a run on 2026-11-24 11:47 had
# one passive download on TCP, not-coresident in curl's domain and
# no-offer in vsftpd's.
ALLOW="not-coresident no-offer"
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

size=$((mb * 1048576))
if [ "$role" = server ]; then
	# anon_root must not be writable by the ftp user; pub inside it is.
	mkdir -p "$d/ftp/pub" "$d/empty"
	chown ftp:ftp "$d/ftp/pub"
	head -c "$size" /dev/urandom > "$d/ftp/pub/down.bin"
	chmod 0644 "$d/ftp/pub/down.bin"
	tb_signal ftp/down-sha "$(sha "$d/ftp/pub/down.bin")"
	cat > "$d/vsftpd.conf" <<-CFG
	listen=YES
	listen_ipv6=NO
	listen_address=$TB_SELF_IP
	listen_port=$port
	background=NO
	anonymous_enable=YES
	no_anon_password=YES
	anon_root=$d/ftp
	write_enable=YES
	anon_upload_enable=YES
	anon_mkdir_write_enable=YES
	anon_other_write_enable=YES
	anon_umask=022
	local_enable=NO
	chroot_local_user=YES
	secure_chroot_dir=$d/empty
	seccomp_sandbox=NO
	pasv_enable=YES
	pasv_address=$TB_SELF_IP
	pasv_min_port=$pasv
	pasv_max_port=$((pasv + 20))
	port_enable=YES
	connect_from_port_20=NO
	xferlog_enable=YES
	log_ftp_protocol=YES
	vsftpd_log_file=$d/vsftpd.log
	dual_log_enable=NO
	syslog_enable=NO
	CFG
	"${XW[@]}" /usr/sbin/vsftpd "$d/vsftpd.conf" > "$d/vsftpd-out.log" 2>&1 &
	vpid=$!; LISTENER_PIDS+=("$vpid")
	daemon_up vsftpd "$vpid" $port
	serve_until ftp/done
	up=$(tb_wait ftp/up-sha 10)
	for f in up-epsv up-eprt; do check_sha "$d/ftp/pub/$f.bin" "$up" "$f.bin"; done
	kill -0 "$vpid" 2> /dev/null || bad "vsftpd exited"
else
	head -c "$size" /dev/urandom > "$d/up.bin"
	tb_signal ftp/up-sha "$(sha "$d/up.bin")"
	await_peer_listener ftp/listening $port
	down=$(tb_wait ftp/down-sha 10)
	url=ftp://$TB_PEER_IP:$port/pub
	ftp() { local what=$1; shift; shimmed "$what" "$d/curl.log" curl -sS -v --max-time 140 "$@"; }
	check() { check_sha "$1" "$down" "$2"; }
	n0=$(nic_bytes)
	ftp "passive EPSV upload" -T "$d/up.bin" "$url/up-epsv.bin"
	ftp "passive EPSV download" -o "$d/down-epsv.bin" "$url/down.bin" && check "$d/down-epsv.bin" "passive EPSV download"
	ftp "passive PASV download" --disable-epsv -o "$d/down-pasv.bin" "$url/down.bin" && check "$d/down-pasv.bin" "passive PASV download"
	ftp "active EPRT upload" -P "$TB_SELF_IP" -T "$d/up.bin" "$url/up-eprt.bin"
	ftp "active PORT download" -P "$TB_SELF_IP" --disable-eprt -o "$d/down-port.bin" "$url/down.bin" \
		&& check "$d/down-port.bin" "active PORT download"
	ftp "listing" -l "$url/" > "$d/list"
	for f in down.bin up-epsv.bin up-eprt.bin; do
		grep -qxF "$f" "$d/list" || bad "the listing lacks $f: $(tr '\n' ' ' < "$d/list")"
	done
	client_done
fi
conclude $((5 * size))
