#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# proftpd under the shim: standalone, daemonizing as its packaging starts it
# (`proftpd -c CONFIG`, Type=forking), a forked child per session that dup's
# the socket to fd 0 and 12-14, chroots into the <Anonymous> root and
# switches uid many times; data with sendfile (UseSendfile on), TCP_CORK,
# SO_OOBINLINE + F_SETOWN.  curl moves 64 MiB up and down over passive and
# active data connections, then lftp (a second client: non-blocking
# connects and poll) puts over active and gets over passive data
# connections; every file sha256-checked.
# Debian's proftpd-core conflicts with vsftpd (both are ftp-server), so when
# it is not installed this case unpacks the proftpd-core .deb fetched with
# `apt-get download` into a cache directory and runs the binary from there
# (its libraries come from tools/install-deps.sh compat).  No DSO module is
# loaded, so the unpacked module directory is never used.
. "$(dirname "$0")/../lib/common.sh"
compat_init proftpd
compat_need curl lftp

if [ -x /usr/sbin/proftpd ]; then
	PROFTPD=/usr/sbin/proftpd
	version=$(pkg_version proftpd-core)
else
	cache=${XWAY_COMPAT_CACHE:-/var/cache/xway-compat}
	version=$(apt-cache policy proftpd-core 2>/dev/null | awk '/Candidate:/{print $2}')
	[ -n "$version" ] && [ "$version" != "(none)" ] || { apt-get update -q >/dev/null 2>&1;
		version=$(apt-cache policy proftpd-core 2>/dev/null | awk '/Candidate:/{print $2}'); }
	[ -n "$version" ] && [ "$version" != "(none)" ] || skip "proftpd-core is not available from apt"
	dir="$cache/proftpd-core-$version"
	if [ ! -x "$dir/usr/sbin/proftpd" ]; then
		mkdir -p "$cache/dl" && chmod 0755 "$cache"
		log "unpacking proftpd-core $version into $dir"
		( cd "$cache/dl" && timeout 120 apt-get download -q "proftpd-core=$version" ) \
			>"$T/log/apt-download" 2>&1 || skip "apt-get download proftpd-core failed: $(tail -n1 "$T/log/apt-download")"
		rm -rf "$dir.tmp" && dpkg-deb -x "$cache"/dl/proftpd-core_*"${version#*:}"_*.deb "$dir.tmp" \
			&& mv "$dir.tmp" "$dir" || fail "dpkg-deb -x failed"
	fi
	PROFTPD="$dir/usr/sbin/proftpd"
fi
if ldd "$PROFTPD" | grep -q 'not found'; then
	"$COMPAT_ROOT/tools/install-deps.sh" compat >"$T/log/install-deps" 2>&1
	ldd "$PROFTPD" | grep 'not found' && fail "proftpd's libraries are missing (add them to the compat list in tools/install-deps.sh)"
fi

MB=64
port=$(free_port)
pasv=$(free_port 21)
mkdir -p "$T/ftp/pub"
chown ftp:ftp "$T/ftp/pub" 2>/dev/null || chown nobody:nogroup "$T/ftp/pub"
anon_user=ftp; id ftp >/dev/null 2>&1 || anon_user=nobody
mkdata "$T/ftp/pub/down.bin" $MB
chmod 0644 "$T/ftp/pub/down.bin"
mkdata "$T/up.bin" $MB
size=$(stat -c%s "$T/up.bin")
cat > "$T/proftpd.conf" <<CFG
ServerName "xway compat"
ServerType standalone
DefaultServer on
Port $port
DefaultAddress 127.0.0.1
SocketBindTight on
UseIPv6 off
User nobody
Group nogroup
PidFile $T/proftpd.pid
ScoreboardFile $T/proftpd.scoreboard
DelayTable none
WtmpLog off
UseReverseDNS off
AuthPAM off
UseSendfile on
SystemLog $T/log/proftpd.log
TransferLog $T/log/xferlog
PassivePorts $pasv $((pasv + 20))
AllowOverwrite on
<Anonymous $T/ftp>
  User $anon_user
  Group $(id -gn $anon_user)
  UserAlias anonymous $anon_user
  RequireValidShell off
  <Directory pub>
    <Limit WRITE>
      AllowAll
    </Limit>
  </Directory>
</Anonymous>
CFG
"$PROFTPD" -t -c "$T/proftpd.conf" >"$T/log/proftpd-t" 2>&1 || fail "proftpd -t: $(tail -n 3 "$T/log/proftpd-t")"
COMPAT_PIDFILES+=("$T/proftpd.pid")
xw "$PROFTPD" -c "$T/proftpd.conf" >"$T/log/proftpd-start" 2>&1 || fail "proftpd did not start: $(tail -n 3 "$T/log/proftpd-start")"
wait_file "$T/proftpd.pid" 15
wait_port "$port" 15
preloaded "$(cat "$T/proftpd.pid")" proftpd
url="ftp://127.0.0.1:$port/pub"

ftp() {  # what curl-args...
	local what=$1; shift
	bounded 120 curl -sS "$@" 2>>"$T/log/curl" || fail "$what: $(tail -n1 "$T/log/curl")"
}
ftp "passive EPSV upload" -T "$T/up.bin" "$url/up-epsv.bin"
same "$T/up.bin" "$T/ftp/pub/up-epsv.bin" "passive (EPSV) upload"
ftp "passive EPSV download" -o "$T/down-epsv.bin" "$url/down.bin"
same "$T/ftp/pub/down.bin" "$T/down-epsv.bin" "passive (EPSV) download (sendfile)"
ftp "active PORT upload" -P 127.0.0.1 --disable-eprt -T "$T/up.bin" "$url/up-port.bin"
same "$T/up.bin" "$T/ftp/pub/up-port.bin" "active (PORT) upload"
ftp "active EPRT download" -P 127.0.0.1 -o "$T/down-eprt.bin" "$url/down.bin"
same "$T/ftp/pub/down.bin" "$T/down-eprt.bin" "active (EPRT) download (sendfile)"
ftp "directory listing" -l "$url/" > "$T/list"
for f in down.bin up-epsv.bin up-port.bin; do
	grep -qxF "$f" "$T/list" || fail "listing lacks $f: $(tr '\n' ' ' < "$T/list")"
done
log "listing ok"

# lftp: one control connection, one data connection per transfer.
bounded 120 lftp -c "debug 5; set net:max-retries 1; set net:timeout 30; set xfer:clobber on;
	open -u anonymous,xway -p $port 127.0.0.1; cd pub;
	set ftp:passive-mode off; put $T/up.bin -o up-lftp.bin;
	set ftp:passive-mode on; get down.bin -o $T/down-lftp.bin" >"$T/log/lftp" 2>&1 \
	|| fail "lftp: $(tail -n 3 "$T/log/lftp")"
same "$T/up.bin" "$T/ftp/pub/up-lftp.bin" "lftp active upload"
same "$T/ftp/pub/down.bin" "$T/down-lftp.bin" "lftp passive download"

# curl: 5 control + 5 data connections; lftp: 1 control + at least 2 data
# (it may list too).  3 uploads, 3 downloads.
# Active mode: the server connects to the client, so directions swap in
# the broker's records; only the total is checked.
check_accel $((3 * size)) $((3 * size)) 13 --any-direction
pass "proftpd $version"
