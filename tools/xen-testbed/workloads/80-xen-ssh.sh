#!/bin/bash
# SPDX-License-Identifier: MIT
# OpenSSH across the two domUs: sshd in xtb-server, ssh/scp in xtb-client,
# both under LD_PRELOAD=libxway.so, xwayd in Xen mode in each domU.  sshd
# is started as its packaging does (`sshd -f CONFIG -p PORT`: it daemonizes,
# forks per connection and re-execs `sshd -R` with the socket on fd 0/1;
# privilege separation and seccomp sandbox as Debian ships them) with a
# private host key, config and authorized key (apps-compat/ssh's config,
# addresses on the bridge).  Transfers: a remote command, scp (SFTP) up and
# down, scp -O up, ssh pipe up and down, XTB_SSH_MB each, sha256 compared
# across the domains (hashes exchanged through xenstore).
# Verdict (both domUs agree on it, see finish): data verified, then every
# connection in this domain's broker is either on the Xen channel (backend
# xen, kernel TCP payload of it < 1% + 4 KiB, netfront NIC bytes during the
# transfers < 5% of the payload + 1 MiB) or on TCP with a reason listed in
# ALLOW below, which says why.  A known defect found here (KNOWN below)
# ends in a skip that names it; anything else that goes wrong is a failure.
set -u
role=$1
app=ssh
need=(/usr/sbin/sshd /usr/bin/scp)
mb=${XTB_SSH_MB:-8}
port=2280
# TCP fallback reasons this workload accepts, with why (empty: none).
# None since session 8: the channel follows sshd's fork (REMAP of the
# grants), its re-exec (the end's state crosses the exec) and the preauth
# child's seccomp sandbox (notifications through the broker), DESIGN §7.2.
ALLOW=""
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

size=$((mb * 1048576))
if [ "$role" = server ]; then
	ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" || bad "ssh-keygen"
	tb_signal ssh/hostkey "$(cut -d' ' -f1,2 "$d/host_key.pub")"
	key=$(tb_wait ssh/clientkey 600) || { bad "no client key"; finish; }
	echo "$key" > "$d/authorized_keys"
	mkdir -p "$d/files"
	head -c "$size" /dev/urandom > "$d/files/down.bin"
	tb_signal ssh/down-sha "$(sha "$d/files/down.bin")"
	tb_signal ssh/dir "$d/files"
	cat > "$d/sshd_config" <<-CFG
	ListenAddress $TB_SELF_IP
	HostKey $d/host_key
	PidFile $d/sshd.pid
	AuthorizedKeysFile $d/authorized_keys
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
	mkdir -p /run/sshd && chmod 0755 /run/sshd     # its unit's RuntimeDirectory
	/usr/sbin/sshd -t -f "$d/sshd_config" -p $port 2> "$d/sshd-t.log" || bad "sshd -t: $(cat "$d/sshd-t.log")"
	"${XW[@]}" /usr/sbin/sshd -f "$d/sshd_config" -p $port -E "$d/sshd.log" || bad "sshd did not start"
	wait_for 60 test -s "$d/sshd.pid" || bad "sshd wrote no pid file"
	spid=$(cat "$d/sshd.pid" 2> /dev/null); LISTENER_PIDS+=("$spid")
	daemon_up sshd "$spid" $port
	serve_until ssh/done
	up=$(tb_wait ssh/up-sha 10)
	for f in up-sftp up-scp up-pipe; do check_sha "$d/files/$f.bin" "$up" "$f.bin"; done
else
	ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" || bad "ssh-keygen"
	tb_signal ssh/clientkey "$(cat "$d/client_key.pub")"
	hk=$(tb_wait ssh/hostkey 600) || { bad "no host key"; finish; }
	echo "[$TB_PEER_IP]:$port $hk" > "$d/known_hosts"
	head -c "$size" /dev/urandom > "$d/up.bin"
	tb_signal ssh/up-sha "$(sha "$d/up.bin")"
	await_peer_listener ssh/listening $port
	down=$(tb_wait ssh/down-sha 10)
	o=(-F /dev/null -i "$d/client_key" -o UserKnownHostsFile="$d/known_hosts"
	   -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=60
	   -o ServerAliveInterval=15 -o ServerAliveCountMax=8 -o Compression=no)
	r=root@$TB_PEER_IP
	run() { local what=$1; shift; shimmed "$what" "$d/client.log" "$@"; }
	check() { check_sha "$1" "$down" "$2"; }
	rd=$(tb_wait ssh/dir 10) || rd=/nonexistent
	n0=$(nic_bytes)
	run "ssh remote command" ssh "${o[@]}" -p $port $r 'echo hello-from-$(id -un)' > "$d/hello" \
		&& { [ "$(cat "$d/hello")" = hello-from-root ] || bad "remote command printed '$(cat "$d/hello")'"; }
	run "scp upload (sftp)" scp "${o[@]}" -P $port -q "$d/up.bin" "$r:$rd/up-sftp.bin"
	run "scp download (sftp)" scp "${o[@]}" -P $port -q "$r:$rd/down.bin" "$d/down-sftp.bin" \
		&& check "$d/down-sftp.bin" "scp download (sftp)"
	run "scp -O upload" scp -O "${o[@]}" -P $port -q "$d/up.bin" "$r:$rd/up-scp.bin"
	run "ssh pipe upload" ssh "${o[@]}" -p $port $r "cat > $rd/up-pipe.bin" < "$d/up.bin"
	run "ssh pipe download" ssh "${o[@]}" -p $port $r "cat $rd/down.bin" > "$d/down-pipe.bin" \
		&& check "$d/down-pipe.bin" "ssh pipe download"
	client_done
fi
conclude $((5 * size))
