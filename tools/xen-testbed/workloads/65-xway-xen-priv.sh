#!/bin/bash
# SPDX-License-Identifier: MIT
# The Xen privilege model (DESIGN §7): applications run unprivileged and get
# their channel from the broker.  xwayd (root) in Xen mode in each domU; the
# shimmed xtb-vchan client and server run as nobody (no access to /dev/xen
# nor xenstore: checked), a verified transfer + ping-pong once client domU ->
# server domU (c2s) and once the other way (s2c), each on a Xen channel
# (xwayctl: backend xen, the bytes on the channel, TCP payload ~0).
# During c2s the server application is stopped (SIGSTOP) while the offer is
# pending, and a process of another unprivileged uid (daemon) tries to
# attach: it cannot open /dev/xen/{gntdev,gntalloc,evtchn,xenbus} (EACCES),
# and the server's broker refuses its forged CLAIMs for that connection
# (no descriptor; its own TCP socket with the connection's names; its own
# socket's names) - none gets CLAIMED or a descriptor.  In the client domU
# the same uid's forged OFFER (the connection's source port, its own
# socket) and WITHDRAW of the pending offer are refused.  Then the server
# continues and the connection must still be accelerated and verified.
set -u
role=$1
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib"
for f in setpriv perl; do
	command -v $f > /dev/null || { echo "skip: no $f in the guest" >&2; exit 77; }
done
app_uid=nobody; app_gid=nogroup; evil_uid=daemon; evil_gid=daemon
id "$app_uid" > /dev/null 2>&1 && id "$evil_uid" > /dev/null 2>&1 \
	|| { echo "skip: users $app_uid/$evil_uid absent" >&2; exit 77; }
as_app()  { setpriv --reuid=$app_uid --regid=$app_gid --clear-groups --inh-caps=-all "$@"; }
as_evil() { setpriv --reuid=$evil_uid --regid=$evil_gid --clear-groups --inh-caps=-all "$@"; }
bytes=${XEN_PRIV_BYTES:-8388608}
pings=100
# A long claim timeout: the server application is held stopped for a few
# seconds while its offer is pending (emulated domUs are slow too).
# xen_link=false: this workload also keeps the xenstore-only exchange (what
# a connection uses while the broker link is down) tested across domains.
tb_xwayd_dir claim_timeout_ms=20000 xen_link=false
chmod 0755 "$d"              # the unprivileged processes reach the socket
trap tb_xwayd_end EXIT
tb_xwayd_start
export XWAY_BROKER_TIMEOUT_MS=3000
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" | grep -Eq ":$1( |\$)"; }
fail=0

# The unprivileged users have no access to the Xen devices nor xenstore.
denied=0
for u in app evil; do
	for dev in gntdev gntalloc evtchn xenbus; do
		[ -e /dev/xen/$dev ] || continue
		if out=$(as_$u bash -c ": <> /dev/xen/$dev" 2>&1); then
			echo "$u user opened /dev/xen/$dev" >&2; fail=1
		else
			case "$out" in *"Permission denied"*) denied=$((denied + 1)) ;;
			*) echo "$u user: /dev/xen/$dev: $out" >&2; fail=1 ;; esac
		fi
	done
	if as_$u xenstore-write "/local/domain/$TB_SELF_DOMID/data/xway-priv-$u" x 2> /dev/null; then
		echo "$u user wrote xenstore" >&2; fail=1
	fi
done
echo "priv.devices_denied=$denied"
[ $denied -ge 8 ] || { echo "expected EACCES on 4 devices for 2 users, saw $denied" >&2; fail=1; }

# forge.pl: the attacker's broker client (perl-base only: sendmsg with
# SCM_RIGHTS through syscall()).  Prints one line per attempt:
# "<what> type=<reply type> status=<status> fds=<descriptors received>".
cat > "$d/forge.pl" <<'EOF'
use strict; use warnings; use Socket;
my ($sockpath, $mode, @a) = @ARGV;
my $SYS_sendmsg = 46; my $SYS_recvmsg = 47;
my $seq = 100;
sub xaddr { my ($ip, $port) = @_;     # struct xway_addr, v4 mapped
	return ("\0" x 10) . "\xff\xff" . inet_aton($ip) . pack("n", $port) . pack("S", AF_INET); }
sub call { my ($type, $body, @fds) = @_;
	# A fresh connection each time: a bad request may get us dropped.
	socket(my $b, AF_UNIX, SOCK_SEQPACKET, 0) or die "socket: $!";
	connect($b, pack_sockaddr_un($sockpath)) or die "connect $sockpath: $!";
	my $msg = pack("LSSLLLL", 0x50574158, 1, $type, 24 + length($body), ++$seq, 0, 0) . $body;
	my $iov = pack("QQ", unpack("Q", pack("p", $msg)), length($msg));
	my $ctl = "";
	if (@fds) {
		my $data = pack("i*", @fds);
		my $len = 16 + length($data);
		$ctl = pack("QiI", $len, SOL_SOCKET, 1) . $data;        # SCM_RIGHTS
		$ctl .= "\0" x ((8 - length($ctl) % 8) % 8);
	}
	my $mh = pack("QLxxxxQQQQix4", 0, 0, unpack("Q", pack("p", $iov)), 1,
		      @fds ? unpack("Q", pack("p", $ctl)) : 0, length($ctl), 0);
	syscall($SYS_sendmsg, fileno($b), $mh, 0) >= 0 or die "sendmsg: $!";
	my $buf = "\0" x 4096; my $cbuf = "\0" x 256;
	my $riov = pack("QQ", unpack("Q", pack("p", $buf)), 4096);
	my $rmh = pack("QLxxxxQQQQix4", 0, 0, unpack("Q", pack("p", $riov)), 1,
		       unpack("Q", pack("p", $cbuf)), 256, 0);
	vec(my $rin = '', fileno($b), 1) = 1;
	select(my $r = $rin, undef, undef, 20) or return (0, 0, 0);
	my $n = syscall($SYS_recvmsg, fileno($b), $rmh, 0);
	return (-1, 0, 0) if $n < 24;
	my (undef, undef, undef, undef, undef, $clen) = unpack("QLxxxxQQQQ", $rmh);
	my $nfds = $clen >= 16 ? int(($clen - 16) / 4) : 0;
	my (undef, undef, $rtype) = unpack("LSS", $buf);
	my $status = unpack("l", substr($buf, 24, 4));
	return ($rtype, $status, $nfds);
}
sub report { my ($what, @r) = @_; printf "%s type=%d status=%d fds=%d\n", $what, @r; }
# A connected TCP socket pair of our own on loopback.
socket(my $l, AF_INET, SOCK_STREAM, 0) or die; bind($l, pack_sockaddr_in(0, inet_aton("127.0.0.1"))) or die;
listen($l, 1) or die; my ($lport) = unpack_sockaddr_in(getsockname($l));
socket(my $c, AF_INET, SOCK_STREAM, 0) or die; connect($c, pack_sockaddr_in($lport, inet_aton("127.0.0.1"))) or die;
accept(my $s, $l) or die;
my ($sport) = unpack_sockaddr_in(getsockname($s)); my ($cport) = unpack_sockaddr_in(getpeername($s));
if ($mode eq "claim") {          # a: local ip, b: local port, c: peer ip, d: peer port
	my $body = xaddr($a[0], $a[1]) . xaddr($a[2], $a[3]);
	report("claim-nofd", call(5, $body));
	report("claim-theirnames", call(5, $body, fileno($s)));
	report("claim-ownnames", call(5, xaddr("127.0.0.1", $sport) . xaddr("127.0.0.1", $cport), fileno($s)));
} elsif ($mode eq "offer") {     # a: dst ip, b: dst port, c: src ip, d: src port, e: offer id
	socket(my $u, AF_INET, SOCK_STREAM, 0) or die; bind($u, pack_sockaddr_in(0, inet_aton("0.0.0.0"))) or die;
	my $off = xaddr($a[0], $a[1]) . xaddr($a[2], $a[3]) . pack("QLL", 1311768467294899695, 20, 1);
	report("offer-nofd", call(4, $off));
	report("offer-theirport", call(4, $off, fileno($u), fileno($u), fileno($u), fileno($u)));
	report("withdraw-theirs", call(6, pack("Q", $a[4])));
}
EOF

# ids: the connection's pending record in this broker (JSON fields).
pending_rec() { ctl connections --json 2> /dev/null | tb_records | grep '"state":"pending"' | head -1; }
field() { echo "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; }

split_addr() { echo "${1%:*}" "${1##*:}"; }   # IPv4 "ip:port" -> "ip port"

# serve NAME PORT [hold]: listen as nobody, signal the peer, wait for the run.
serve() {
	local name=$1 port=$2 hold=${3:-}
	setpriv --reuid=$app_uid --regid=$app_gid --clear-groups --inh-caps=-all \
		env LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" server --tcp "$TB_SELF_IP" "$port" \
		--timeout "$TB_PROBE_TIMEOUT" > "$d/$name.s" 2> "$d/$name.s.err" &
	local spid=$!
	wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" \
		|| { echo "$name: listener never reached the broker" >&2; fail=1; }
	if [ -n "$hold" ]; then
		# Hold the application before it accepts: the offer stays
		# pending here while the attacker tries.  (setpriv and env
		# exec, so spid is xtb-vchan itself.)
		kill -STOP $spid
		tb_signal "$name/listening"
		local rec=""
		wait_for 120 sh -c "'$TB_BIN/xwayctl' connections --json --socket '$sock' | grep -q '\"state\":\"pending\"'" \
			|| { echo "$name: no pending offer from the peer" >&2; fail=1; }
		rec=$(pending_rec)
		echo "$name: pending record: $rec" >&2
		# A Xen record here: side 0 the client (peer), side 1 us.
		local cli srv
		cli=$(echo "$rec" | grep -o '"client":{"addr":"[^"]*"' | cut -d'"' -f6)
		srv=$(echo "$rec" | grep -o '"server":{"addr":"[^"]*"' | cut -d'"' -f6)
		if [ -n "$cli" ] && [ -n "$srv" ]; then
			as_evil perl "$d/forge.pl" "$sock" claim $(split_addr "$srv") $(split_addr "$cli") \
				> "$d/$name.forge" 2> "$d/$name.forge.err" || { echo "forge.pl failed" >&2; cat "$d/$name.forge.err" >&2; fail=1; }
		else
			echo "$name: cannot read the pending record's addresses" >&2; fail=1
		fi
		cat "$d/$name.forge" >&2
		check_forged "$d/$name.forge" 3
		# The client domain's attacker runs while the offer is pending too.
		tb_wait "$name/forged" 120 > /dev/null || { echo "$name: the peer's attack never finished" >&2; fail=1; }
		kill -CONT $spid
	else
		tb_signal "$name/listening"
	fi
	wait $spid || { echo "$name: server failed" >&2; fail=1; }
	cat "$d/$name.s.err" >&2
	sed "s/^/$name.server./" "$d/$name.s"
}
# check_forged FILE N: N refused attempts (no CLAIMED reply, no descriptor).
check_forged() {
	local n
	n=$(grep -c 'type=' "$1")
	[ "$n" = "$2" ] || { echo "expected $2 forged attempts, saw $n" >&2; fail=1; }
	if grep -Eq 'type=34|fds=[1-9]' "$1"; then
		echo "a forged request got CLAIMED or descriptors" >&2; fail=1
	fi
	refused=$((refused + $(grep -Ec 'type=(33|36) status=-' "$1")))
}
refused=0
# connect NAME PORT [attack]: wait for the peer's listener, run the client as nobody.
connect() {
	local name=$1 port=$2 attack=${3:-}
	tb_wait "$name/listening" 300 > /dev/null || { echo "$name: peer never listened" >&2; fail=1; return; }
	wait_for 60 peer_listens "$port" || echo "$name: the peer's listener is not in xenstore" >&2
	sleep 1      # our broker reads it on its watch event
	setpriv --reuid=$app_uid --regid=$app_gid --clear-groups --inh-caps=-all \
		env LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" client --tcp "$TB_PEER_IP" "$port" \
		--bytes "$bytes" --pings "$pings" --timeout "$TB_PROBE_TIMEOUT" > "$d/$name.c" 2> "$d/$name.c.err" &
	local cpid=$!
	if [ -n "$attack" ]; then
		# Our offer is pending while the peer's server is held.
		local rec
		wait_for 60 sh -c "'$TB_BIN/xwayctl' connections --json --socket '$sock' | grep -q '\"state\":\"pending\"'" \
			|| { echo "$name: no pending offer here" >&2; fail=1; }
		rec=$(pending_rec)
		echo "$name: pending record: $rec" >&2
		local cli srv oid
		cli=$(echo "$rec" | grep -o '"client":{"addr":"[^"]*"' | cut -d'"' -f6)
		srv=$(echo "$rec" | grep -o '"server":{"addr":"[^"]*"' | cut -d'"' -f6)
		# Our broker's published offer node names the offer id.
		oid=$(xenstore-list "/local/xway/$TB_SELF_DOMID/offers" 2> /dev/null | head -1)
		if [ -n "$cli" ] && [ -n "$srv" ] && [ -n "$oid" ]; then
			as_evil perl "$d/forge.pl" "$sock" offer $(split_addr "$srv") $(split_addr "$cli") "$oid" \
				> "$d/$name.forge" 2> "$d/$name.forge.err" || { echo "forge.pl failed" >&2; cat "$d/$name.forge.err" >&2; fail=1; }
		else
			echo "$name: cannot read the pending record (client/server/offer_id)" >&2; fail=1
		fi
		cat "$d/$name.forge" >&2
		check_forged "$d/$name.forge" 3
		tb_signal "$name/forged"
	fi
	wait $cpid || { echo "$name: client failed" >&2; fail=1; }
	cat "$d/$name.c.err" >&2
	sed "s/^/$name.client./" "$d/$name.c"
}

if [ "$role" = server ]; then
	serve c2s 47651 hold
	connect s2c 47652
else
	connect c2s 47651 attack
	serve s2c 47652
fi
echo "priv.forged_refused=$refused"
tb_barrier priv-done 300 || true
tb_collect_records
cp "$d/conns.json" "${TB_OUT:-/tmp/x}.conns.json" 2> /dev/null
tb_accel_summary "$bytes"
xen=$tb_xen; tcp_payload=$tb_tcp_payload
echo "priv.accel_records=$xen"
echo "priv.max_tcp_payload=$tcp_payload"
echo "report.priv=unprivileged apps: $xen xen connections, devices denied $denied, forged requests refused $refused"
[ $fail = 0 ] || { echo "a check or transfer failed" >&2; exit 1; }
[ $refused -ge 3 ] || { echo "expected at least 3 refused forged requests, saw $refused" >&2; exit 1; }
[ $xen -ge 2 ] || { echo "expected 2 xen connections with >= $bytes B on the channel, saw $xen" >&2; cat "$d/conns.json" >&2; exit 1; }
# The payload stayed off TCP (under 1% of it on the kernel's counters).
[ $((tcp_payload * 100)) -lt "$bytes" ] || { echo "TCP carried $tcp_payload B" >&2; exit 1; }
exit 0
