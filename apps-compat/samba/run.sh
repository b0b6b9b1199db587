#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Samba under the shim: smbd started as its systemd unit does (`smbd
# --foreground --no-process-group`), a forked smbd per client (epoll,
# recvmsg/sendmsg with iovecs, per-thread setresuid, unshare(CLONE_FS) in
# its I/O threads), private smb.conf, state and tdbsam password database,
# port given by `smb ports`.  smbclient (FIONREAD on its socket) logs in
# with a password, puts and gets 64 MiB, lists the share; sha256-checked.
. "$(dirname "$0")/../lib/common.sh"
compat_init samba
compat_need smbd smbclient smbpasswd

MB=64
port=$(free_port)
S="$T/samba"
mkdir -p "$S/private" "$S/lock" "$S/state" "$S/cache" "$S/pid" "$S/ncalrpc" "$T/share"
chmod 0700 "$S/private"
cat > "$T/smb.conf" <<CFG
[global]
  netbios name = XWAYCOMPAT
  workgroup = WORKGROUP
  server role = standalone server
  smb ports = $port
  interfaces = 127.0.0.1
  bind interfaces only = yes
  disable netbios = yes
  server min protocol = SMB2_10
  client min protocol = SMB2_10
  passdb backend = tdbsam:$S/private/passdb.tdb
  private dir = $S/private
  lock directory = $S/lock
  state directory = $S/state
  cache directory = $S/cache
  pid directory = $S/pid
  ncalrpc dir = $S/ncalrpc
  binddns dir = $S/private
  log file = $T/log/smbd.%m
  log level = 1
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  map to guest = Never
  usershare path =
[share]
  path = $T/share
  read only = no
  browseable = yes
CFG
pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n%s\n' "$pw" "$pw" | smbpasswd -c "$T/smb.conf" -a -s root >"$T/log/smbpasswd" 2>&1 \
	|| fail "smbpasswd: $(cat "$T/log/smbpasswd")"
# Own session, as under systemd: with --no-process-group smbd signals its
# whole process group when it stops, which would include this script.
compat_bg smbd setsid smbd --foreground --no-process-group -s "$T/smb.conf"
wait_port "$port" 30 "$BG_PID"
preloaded "$BG_PID" "smbd+"

mkdata "$T/up.bin" $MB
mkdata "$T/share/down.bin" $MB
size=$(stat -c%s "$T/up.bin")
printf 'username = root\npassword = %s\n' "$pw" > "$T/auth"; chmod 0600 "$T/auth"
smb() {  # what commands
	bounded 120 smbclient -s "$T/smb.conf" "//127.0.0.1/share" -p "$port" \
		-A "$T/auth" -c "$2" >>"$T/log/smbclient" 2>&1 || fail "smbclient $1: $(tail -n 3 "$T/log/smbclient")"
}
smb put "lcd $T; put up.bin up.bin"
same "$T/up.bin" "$T/share/up.bin" "smbclient put"
smb get "lcd $T; get down.bin down-got.bin"
same "$T/share/down.bin" "$T/down-got.bin" "smbclient get"
bounded 60 smbclient -s "$T/smb.conf" "//127.0.0.1/share" -p "$port" -A "$T/auth" -c ls \
	>"$T/ls" 2>>"$T/log/smbclient" || fail "smbclient ls failed"
grep -q ' up.bin ' "$T/ls" && grep -q ' down.bin ' "$T/ls" || fail "listing lacks files: $(cat "$T/ls")"
log "listing ok"
# Wrong password must be refused (the server really checks).
bounded 60 smbclient -s "$T/smb.conf" "//127.0.0.1/share" -p "$port" -U "root%wrong" -c ls \
	>"$T/log/smbclient-bad" 2>&1 && fail "smbclient with a wrong password succeeded"
grep -q NT_STATUS_LOGON_FAILURE "$T/log/smbclient-bad" || fail "wrong password: $(tail -n1 "$T/log/smbclient-bad")"
log "wrong password refused"

check_accel "$size" "$size" 4
pass "samba $(pkg_version samba)"
