#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# OpenSSH under the shim, started as its packaging does: `sshd -f CONFIG -p
# PORT` daemonizes; for each connection the listener forks, moves the socket
# to fd 0/1 and re-execs `sshd -R`; the pre-auth child chroots to /run/sshd,
# sets RLIMIT_NOFILE/NPROC/FSIZE to 0 and installs its seccomp sandbox
# (default privilege separation and sandbox, PAM on, as Debian ships it).
# Private host key, private authorized key for root (AuthorizedKeysFile in
# the private config; StrictModes off because $T sits under /tmp).
# Transfers: scp (SFTP protocol, the default) up and down, scp -O (the old
# scp protocol) up, and ssh with a pipe both ways; every file sha256-checked.
. "$(dirname "$0")/../lib/common.sh"
compat_init ssh
compat_need /usr/sbin/sshd ssh scp ssh-keygen

MB=64
port=$(free_port)
ssh-keygen -q -t ed25519 -N '' -f "$T/host_key" || fail "ssh-keygen (host)"
ssh-keygen -q -t ed25519 -N '' -f "$T/client_key" || fail "ssh-keygen (client)"
cp "$T/client_key.pub" "$T/authorized_keys"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$T/host_key.pub")" > "$T/known_hosts"
mkdir -p "$T/files"
cat > "$T/sshd_config" <<CFG
ListenAddress 127.0.0.1
HostKey $T/host_key
PidFile $T/sshd.pid
AuthorizedKeysFile $T/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
UseDNS no
PrintMotd no
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
CFG
# The privilege-separation chroot the packaging creates (RuntimeDirectory).
mkdir -p /run/sshd && chmod 0755 /run/sshd
/usr/sbin/sshd -t -f "$T/sshd_config" -p "$port" 2>"$T/log/sshd-t" \
	|| fail "sshd -t rejects the config: $(cat "$T/log/sshd-t")"
COMPAT_PIDFILES+=("$T/sshd.pid")
xw /usr/sbin/sshd -f "$T/sshd_config" -p "$port" -E "$T/log/sshd" \
	|| fail "sshd did not start"
wait_file "$T/sshd.pid" 15
wait_port "$port" 15
preloaded "$(cat "$T/sshd.pid")" sshd

SSH_OPTS=(-F /dev/null -i "$T/client_key" -o UserKnownHostsFile="$T/known_hosts"
	-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=20
	-o Compression=no)
run() {  # what command...: run a client under the shim, bounded in time
	local what=$1; shift
	bounded 120 "$@" 2>>"$T/log/client" || fail "$what failed (exit $?): $(tail -n 3 "$T/log/client")"
}

mkdata "$T/up.bin" $MB
mkdata "$T/down.bin" $MB
cp "$T/down.bin" "$T/files/down.bin"
size=$(stat -c%s "$T/up.bin")

run "ssh (remote command)" ssh "${SSH_OPTS[@]}" -p "$port" root@127.0.0.1 \
	"echo hello-from-\$(id -un)" > "$T/hello"
[ "$(cat "$T/hello")" = "hello-from-root" ] || fail "ssh remote command printed '$(cat "$T/hello")'"

run "scp upload" scp "${SSH_OPTS[@]}" -P "$port" -q "$T/up.bin" "root@127.0.0.1:$T/files/up-sftp.bin"
same "$T/up.bin" "$T/files/up-sftp.bin" "scp upload (sftp protocol)"
run "scp download" scp "${SSH_OPTS[@]}" -P "$port" -q "root@127.0.0.1:$T/files/down.bin" "$T/down-sftp.bin"
same "$T/down.bin" "$T/down-sftp.bin" "scp download (sftp protocol)"
run "scp -O upload" scp -O "${SSH_OPTS[@]}" -P "$port" -q "$T/up.bin" "root@127.0.0.1:$T/files/up-scp.bin"
same "$T/up.bin" "$T/files/up-scp.bin" "scp -O upload (scp protocol)"
run "ssh pipe upload" ssh "${SSH_OPTS[@]}" -p "$port" root@127.0.0.1 "cat > $T/files/up-pipe.bin" < "$T/up.bin"
same "$T/up.bin" "$T/files/up-pipe.bin" "ssh pipe upload"
run "ssh pipe download" ssh "${SSH_OPTS[@]}" -p "$port" root@127.0.0.1 "cat $T/files/down.bin" > "$T/down-pipe.bin"
same "$T/down.bin" "$T/down-pipe.bin" "ssh pipe download"

# Six connections; payload 3 x MB up, 2 x MB down (SSH framing adds more).
check_accel $((3 * size)) $((2 * size)) 6
pass "openssh $(pkg_version openssh-server), ${MB} MiB x 5 transfers"
