#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vsftpd under the shim: standalone (listen=YES, in the foreground as its
# systemd unit runs it), one process per session made with raw clone() into
# new IPC and network namespaces (isolate=YES, isolate_network=YES, the
# defaults), privileged parent handing data sockets over by SCM_RIGHTS,
# sessions chrooted (anonymous users always are; chroot_local_user=YES too),
# seccomp_sandbox=NO (broken on Debian 12 even without a preload).  curl
# moves 64 MiB up and down over passive (EPSV and PASV) and active (EPRT and
# PORT) data connections, and lists the directory; every file sha256-checked.
. "$(dirname "$0")/../lib/common.sh"
compat_init vsftpd
compat_need vsftpd curl

MB=64
port=$(free_port)
pasv=$(free_port 21)
# anon_root must not be writable by the ftp user (vsftpd refuses it); the
# upload directory inside it is.
mkdir -p "$T/ftp/pub" "$T/empty"
chown ftp:ftp "$T/ftp/pub"
mkdata "$T/ftp/pub/down.bin" $MB
chmod 0644 "$T/ftp/pub/down.bin"
mkdata "$T/up.bin" $MB
size=$(stat -c%s "$T/up.bin")
cat > "$T/vsftpd.conf" <<CFG
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$T/ftp
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
local_enable=NO
chroot_local_user=YES
secure_chroot_dir=$T/empty
seccomp_sandbox=NO
pasv_enable=YES
pasv_min_port=$pasv
pasv_max_port=$((pasv + 20))
port_enable=YES
connect_from_port_20=NO
xferlog_enable=YES
log_ftp_protocol=YES
vsftpd_log_file=$T/log/vsftpd.log
dual_log_enable=NO
syslog_enable=NO
CFG
compat_bg vsftpd vsftpd "$T/vsftpd.conf"
wait_port "$port" 15 "$BG_PID"
preloaded "$BG_PID" vsftpd
url="ftp://127.0.0.1:$port/pub"

ftp() {  # what curl-args...
	local what=$1; shift
	bounded 120 curl -sS "$@" 2>>"$T/log/curl" || fail "$what: $(tail -n1 "$T/log/curl")"
}
ftp "passive EPSV upload" -T "$T/up.bin" "$url/up-epsv.bin"
same "$T/up.bin" "$T/ftp/pub/up-epsv.bin" "passive (EPSV) upload"
ftp "passive EPSV download" -o "$T/down-epsv.bin" "$url/down.bin"
same "$T/ftp/pub/down.bin" "$T/down-epsv.bin" "passive (EPSV) download"
ftp "passive PASV download" --disable-epsv -o "$T/down-pasv.bin" "$url/down.bin"
same "$T/ftp/pub/down.bin" "$T/down-pasv.bin" "passive (PASV) download"
ftp "active EPRT upload" -P 127.0.0.1 -T "$T/up.bin" "$url/up-eprt.bin"
same "$T/up.bin" "$T/ftp/pub/up-eprt.bin" "active (EPRT) upload"
ftp "active PORT download" -P 127.0.0.1 --disable-eprt -o "$T/down-port.bin" "$url/down.bin"
same "$T/ftp/pub/down.bin" "$T/down-port.bin" "active (PORT) download"
ftp "directory listing" -l "$url/" > "$T/list"
for f in down.bin up-epsv.bin up-eprt.bin; do
	grep -qxF "$f" "$T/list" || fail "listing lacks $f: $(tr '\n' ' ' < "$T/list")"
done
log "listing ok"

# 6 control + 6 data connections; 2 uploads, 3 downloads.
# Active mode: the server connects to the client, so directions swap in
# the broker's records; only the total is checked.
check_accel $((2 * size)) $((3 * size)) 12 --any-direction
pass "vsftpd $(pkg_version vsftpd)"
