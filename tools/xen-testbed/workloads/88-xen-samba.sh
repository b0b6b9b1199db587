#!/bin/bash
# SPDX-License-Identifier: MIT
# Samba across the two domUs: in xtb-server smbd as its unit starts it
# (`smbd --foreground --no-process-group`, in its own session), a forked
# smbd per client, private smb.conf, state and tdbsam password database
# (apps-compat/samba's config, addresses on the bridge); in xtb-client
# smbclient logging in with the password (exchanged through xenstore),
# putting and getting XTB_SMB_MB, listing the share, and refused with a
# wrong password.  Both under LD_PRELOAD=libxway.so; sha256 compared
# across the domains.  Verdict: guest/appslib.sh.
set -u
role=$1
app=samba
need=(/usr/sbin/smbd /usr/bin/smbclient /usr/bin/smbpasswd)
mb=${XTB_SMB_MB:-8}
port=4455
# TCP fallback reasons this workload accepts, with why (empty: none).
# (No left-channel since session 8: the channel follows the fork of the
# smbd that serves the client, DESIGN §7.2.)
# withdrawn / no-offer: an offer decided before the claim (emulated
# timing), both ends on TCP.
ALLOW="withdrawn no-offer"
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

size=$((mb * 1048576))
if [ "$role" = server ]; then
	S=$d/samba
	mkdir -p "$S/private" "$S/lock" "$S/state" "$S/cache" "$S/pid" "$S/ncalrpc" "$d/share"
	chmod 0700 "$S/private"
	cat > "$d/smb.conf" <<-CFG
	[global]
	  netbios name = XTBSERVER
	  workgroup = WORKGROUP
	  server role = standalone server
	  smb ports = $port
	  interfaces = $TB_SELF_IP
	  bind interfaces only = yes
	  disable netbios = yes
	  server min protocol = SMB2_10
	  passdb backend = tdbsam:$S/private/passdb.tdb
	  private dir = $S/private
	  lock directory = $S/lock
	  state directory = $S/state
	  cache directory = $S/cache
	  pid directory = $S/pid
	  ncalrpc dir = $S/ncalrpc
	  binddns dir = $S/private
	  log file = $d/smbd.%m.log
	  log level = 1
	  load printers = no
	  printing = bsd
	  printcap name = /dev/null
	  disable spoolss = yes
	  map to guest = Never
	  usershare path =
	[share]
	  path = $d/share
	  read only = no
	  browseable = yes
	CFG
	pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
	printf '%s\n%s\n' "$pw" "$pw" | smbpasswd -c "$d/smb.conf" -a -s root > "$d/smbpasswd.log" 2>&1 \
		|| bad "smbpasswd: $(tr '\n' ' ' < "$d/smbpasswd.log")"
	head -c "$size" /dev/urandom > "$d/share/down.bin"
	tb_signal samba/down-sha "$(sha "$d/share/down.bin")"
	tb_signal samba/pw "$pw"
	# Its own session, as under systemd: with --no-process-group smbd
	# signals its whole process group when it stops.
	"${XW[@]}" setsid smbd --foreground --no-process-group -s "$d/smb.conf" > "$d/smbd-out.log" 2>&1 &
	spid=$!; LISTENER_PIDS+=("$spid")
	daemon_up smbd "$spid" $port 180
	serve_until samba/done
	up=$(tb_wait samba/up-sha 10)
	check_sha "$d/share/up.bin" "$up" "smbclient put"
	kill -0 "$spid" 2> /dev/null || bad "smbd exited"
else
	head -c "$size" /dev/urandom > "$d/up.bin"
	tb_signal samba/up-sha "$(sha "$d/up.bin")"
	await_peer_listener samba/listening $port
	down=$(tb_wait samba/down-sha 10)
	printf 'username = root\npassword = %s\n' "$(tb_wait samba/pw 10)" > "$d/auth"
	chmod 0600 "$d/auth"
	printf '[global]\n  client min protocol = SMB2_10\n  disable netbios = yes\n' > "$d/smb.conf"
	smb() { # smb WHAT COMMANDS [OPTIONS...]: smbclient under the shim, bounded
		local what=$1 c=$2; shift 2
		shimmed "$what" "$d/smbclient.log" smbclient -s "$d/smb.conf" "//$TB_PEER_IP/share" -p $port \
			-t 120 -c "$c" "$@" >> "$d/smbclient.log"
	}
	n0=$(nic_bytes)
	smb "put" "lcd $d; put up.bin up.bin" -A "$d/auth"
	smb "get" "lcd $d; get down.bin down-got.bin" -A "$d/auth" && check_sha "$d/down-got.bin" "$down" "smbclient get"
	smb "ls" "ls" -A "$d/auth"
	grep -q ' up.bin ' "$d/smbclient.log" && grep -q ' down.bin ' "$d/smbclient.log" \
		|| bad "the listing lacks files: $(tail -n 5 "$d/smbclient.log" | tr '\n' ' ')"
	# A wrong password is refused (the server really checks).
	if [ ${#err[@]} = 0 ]; then
		timeout 150 "${XW[@]}" smbclient -s "$d/smb.conf" "//$TB_PEER_IP/share" -p $port -t 120 \
			-U 'root%wrong' -c ls > "$d/bad.log" 2>&1 && bad "smbclient with a wrong password succeeded"
		grep -q NT_STATUS_LOGON_FAILURE "$d/bad.log" && log "wrong password refused" \
			|| bad "wrong password: $(tail -n 1 "$d/bad.log")"
	fi
	client_done
fi
conclude $((2 * size))
