#!/bin/bash
# SPDX-License-Identifier: MIT
# MariaDB across the two domUs: in xtb-server mariadbd in the foreground as
# its unit runs it, switching to the mysql user (`--user=mysql`; thread
# per connection), a private datadir made by mariadb-install-db, TCP on the
# bridge address; in xtb-client the mariadb client and mysqlslap over TCP
# (--protocol=tcp).  Both under LD_PRELOAD=libxway.so.  Checks: 20000 rows
# inserted and read back byte-exact, aggregates, an XTB_SQL_MB random blob
# sent as hex and read back as hex, the server's SHA2 of it, and a short
# mysqlslap (4 clients, 2 iterations, mixed queries).  The xwayd in Xen
# mode, the verdict and its rules are those of 80-xen-ssh (common part
# below, kept identical).
set -u
role=$1
# Not yet passing across domains (docs/COMPAT.md, Xen table): sshd and
# vsftpd hand an accepted Xen channel to a re-exec'd or clone()d process,
# which cannot take it over; apache2's event-MPM workers stall mid-transfer
# on a Xen channel.  So these run only with XEN_TESTBED_APPS=1.
if [ "${TB_APPS:-0}" != 1 ]; then
	echo "skip: the apps across domains run only with XEN_TESTBED_APPS=1 (known failures: docs/COMPAT.md)" >&2
	exit 77
fi
app=mysql
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
for f in "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib" /usr/sbin/mariadbd /usr/bin/mariadb /usr/bin/mysqlslap; do
	[ -e "$f" ] || { echo "skip: $f missing (guest tree without the app packages?)" >&2; exit 77; }
done
mb=${XTB_SQL_MB:-4}
port=3381
nic=${XTB_NIC:-enX0}
# TCP fallback reasons this workload accepts, with why (empty: none).
# The connections are accepted by mariadbd (mysql user), unprivileged: the shim
# cannot open /dev/xen/* (no privilege model yet, DESIGN §7), so it does not
# claim (setup-chan, "uid N cannot open /dev/xen/*") and the offer is
# withdrawn ("withdrawn": by the client when the server speaks first, else at
# the claim timeout); both ends on verified plain TCP.
ALLOW="setup-chan withdrawn"
# A known defect (docs/COMPAT.md, Xen) and the daemon pids whose Xen
# channel shows it (empty: none).
KNOWN=""
LISTENER_PIDS=()
KNOWN_HIT=
d=$(mktemp -d /tmp/xtb-$app.XXXXXX)
chmod 0755 "$d"
sock=$d/xwayd.sock
bpid=
err=()          # failures of this side
log() { printf '[%s %s %s] %s\n' "$app" "$role" "$(date +%T)" "$*" >&2; }
bad() { log "FAIL: $*"; err+=("$*"); }

# ---- common part of the 8x workloads: broker, shim, verdict -----------------
stop_tree() { # stop_tree PID: PID and its descendants, TERM then KILL (bounded)
	local p=$1 kids k i
	[ -n "$p" ] || return 0
	kids=$(ps -o pid= --ppid "$p" 2> /dev/null)
	kill -TERM "$p" 2> /dev/null
	for k in $kids; do stop_tree "$k"; done
	for ((i = 0; i < 50; i++)); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.1; done
	kill -KILL "$p" 2> /dev/null
	return 0
}
STOP=()         # pids (daemons and their workers) stopped at exit
cleanup() {
	local p
	for p in "${STOP[@]}"; do stop_tree "$p"; done
	[ -n "$bpid" ] && stop_tree "$bpid"
	for f in "$d"/*.log; do [ -f "$f" ] && cp "$f" "${TB_OUT:-/tmp/x}.${f##*/}" 2> /dev/null; done
	rm -rf "$d"
}
trap cleanup EXIT
printf '[broker]\nmode=xen\nlog_level=7\n' > "$d/xwayd.conf"
"$TB_BIN/xwayd" --foreground --config "$d/xwayd.conf" --socket "$sock" > "$d/xwayd.log" 2>&1 &
bpid=$!
wait_for 60 test -S "$sock" || { echo "xwayd did not start" >&2; cat "$d/xwayd.log" >&2; exit 1; }
# Daemons drop privileges: their workers must reach the broker too.
chmod 0666 "$sock"
ctl() { "$TB_BIN/xwayctl" "$@" --socket "$sock"; }
ctl status --json | grep -q '"mode":"xen"' || { echo "xwayd is not in Xen mode" >&2; exit 1; }
# Emulated domUs: broker replies may take longer than the shim's 100 ms.
XW=(env LD_PRELOAD="$lib" XWAY_BROKER_SOCK="$sock" XWAY_BROKER_TIMEOUT_MS=3000)
nic_bytes() {
	echo $(( $(cat "/sys/class/net/$nic/statistics/rx_bytes") + $(cat "/sys/class/net/$nic/statistics/tx_bytes") ))
}
# listening PORT: our broker has a listener on PORT (published to xenstore).
listening() { ctl listeners --json 2> /dev/null | grep -q ":$1\""; }
# peer_listens PORT: the peer's broker published a listener on PORT.
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" 2> /dev/null | grep -Eq ":$1( |\$)"; }
# await_peer_listener NAME PORT: the peer signalled NAME and its listener on
# PORT is in xenstore; a second for our broker's watch to read it.
await_peer_listener() {
	tb_wait "$1" 600 > /dev/null || { bad "the peer never signalled $1"; return 1; }
	wait_for 60 peer_listens "$2" || log "the peer's listener on $2 is not in xenstore (it may stay on TCP)"
	sleep 1
}
# field REC KEY: a number or string field of one JSON record (first match;
# client fields come before server fields in a record).
num_fields() { echo "$1" | grep -o "\"$2\":[0-9]*" | cut -d: -f2; }
str_field() { echo "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }
# verdict PAYLOAD NIC_BYTES: this domain's broker records against the rules
# in the header; prints report lines.
verdict() {
	local payload=$1 nicb=$2 rec st be rs det chan=0 tcp=0 nx=0 nt=0 n=0 v why=""
	sleep 3          # the close REPORTs reach the broker
	ctl connections --json > "$d/conns.json" 2> "$d/conns.err" || { bad "xwayctl connections failed"; return; }
	cp "$d/conns.json" "${TB_OUT:-/tmp/x}.conns.json" 2> /dev/null
	ctl connections >&2 || true
	while IFS= read -r rec; do
		case "$rec" in *'"id":'*) ;; *) continue ;; esac
		n=$((n + 1))
		st=$(str_field "$rec" state); be=$(str_field "$rec" backend)
		rs=$(str_field "$rec" reason); det=$(str_field "$rec" detail)
		if [ "$be" = xen ]; then
			nx=$((nx + 1))
			# KNOWN defect signature: a Xen channel attached by a
			# daemon's listener process (it then forks/clones or
			# re-execs the session, which cannot use the channel).
			v=$(echo "$rec" | grep -o '"server":{[^}]*"pid":[0-9]*' | grep -o '[0-9]*$')
			[ -n "$KNOWN" ] && [ -n "$v" ] && [[ " ${LISTENER_PIDS[*]:-} " == *" $v "* ]] && KNOWN_HIT=$KNOWN
			for v in $(num_fields "$rec" bytes_c2s) $(num_fields "$rec" bytes_s2c); do chan=$((chan + v)); done
			for v in $(num_fields "$rec" tcp_bytes_sent) $(num_fields "$rec" tcp_bytes_received); do tcp=$((tcp + v)); done
		else
			nt=$((nt + 1))
			case " $ALLOW " in
			*" $rs "*) why="$why $rs" ;;
			*) bad "connection $(str_field "$rec" id) on TCP ($st, reason '$rs': $det), not an accepted reason" ;;
			esac
		fi
	done < <(sed 's/},{"id"/}\n{"id"/g' "$d/conns.json")
	echo "$app.conns=$n"; echo "$app.xen=$nx"; echo "$app.tcp=$nt"
	echo "$app.chan_bytes=$chan"; echo "$app.tcp_payload_of_xen=$tcp"; echo "$app.nic_bytes=$nicb"
	echo "$app.payload=$payload"
	[ "$n" -gt 0 ] || bad "the broker recorded no connection"
	if [ "$nt" = 0 ] && [ "$n" -gt 0 ]; then
		[ "$chan" -ge "$payload" ] || bad "channel bytes $chan < payload $payload"
		[ "$tcp" -le $((chan / 100 + 4096 * nx)) ] || bad "kernel TCP carried $tcp B of accelerated connections"
		[ "$nicb" -le $((payload / 20 + 1048576)) ] || bad "netfront moved $nicb B for a $payload B payload"
		echo "report.$app.$role=$nx/$n connections on the Xen channel, $chan B on it, netfront $nicb B for $payload B payload"
	else
		why=$(echo $why | tr ' ' '\n' | sort | uniq -c | awk '{ printf " %s x%d", $2, $1 }')
		echo "report.$app.$role=$nx/$n on Xen, $nt on TCP (documented reasons:$why), netfront $nicb B for $payload B payload"
	fi
}
# finish: both domUs publish their verdict and exit with the worse one
# (the report requires the same status on both sides).
finish() {
	local mine=pass peer
	[ ${#err[@]} = 0 ] || mine=fail
	# With the known defect's signature seen, its symptoms (failed
	# transfers) are that defect: reported, not a failure of the run.
	[ -n "${KNOWN_HIT:-}" ] && [ ${#err[@]} != 0 ] && mine=known
	tb_signal "$app/verdict" "$mine"
	peer=$(tb_wait "$app/verdict" 600) || peer=fail
	echo "$app.verdict.$role=$mine"; echo "$app.verdict.peer=$peer"
	# The signature is seen on one side (the server's broker); the other
	# side's failures are the same defect's symptoms.
	if [ -n "$KNOWN" ] && { [ "$mine" = known ] || [ "$peer" = known ]; }; then
		[ "$mine" = known ] || KNOWN_HIT="$KNOWN (signature seen by the peer)"
		echo "report.$app.known.$role=KNOWN DEFECT: ${KNOWN_HIT:-seen by the peer} (docs/COMPAT.md, Xen)"
		log "skip: known defect: ${KNOWN_HIT:-seen by the peer}"
		exit 77
	fi
	if [ "$mine" = fail ] || [ "$peer" = fail ]; then
		[ "$mine" = fail ] || log "the peer failed"
		exit 1
	fi
	exit 0
}
# ---- end of the common part ---------------------------------------------------

size=$((mb * 1048576))
# rows: the rows' SQL and the expected SELECT output, computed the same way
# in both domains (no random part).
rows() {
	awk -v want="$1" 'BEGIN {
		if (want == "sql") {
			print "CREATE DATABASE xc; USE xc;"
			print "CREATE TABLE kv (id INT PRIMARY KEY, v CHAR(48) NOT NULL, n BIGINT NOT NULL) ENGINE=InnoDB;"
		}
		for (b = 0; b < 20; b++) {
			line = ""
			for (i = b * 1000; i < (b + 1) * 1000; i++) {
				v = sprintf("%08x%08x%08x%08x%08x%08x", (i * 2654435761) % 2147483648,
					(i * 40503 + 7) % 2147483648, (i * i) % 2147483648,
					(i * 97 + 13) % 2147483648, (2147483647 - i * 31) % 2147483648, i)
				n = i * i - 7 * i
				if (want == "sql")
					line = line (line == "" ? "" : ",") sprintf("(%d,\047%s\047,%d)", i, v, n)
				else
					printf "%d\t%s\t%d\n", i, v, n
			}
			if (want == "sql")
				print "INSERT INTO kv VALUES " line ";"
		}
	}'
}
if [ "$role" = server ]; then
	mkdir -p "$d/data" "$d/run"
	chown mysql:mysql "$d/data" "$d/run"
	mariadb-install-db --no-defaults --datadir="$d/data" --user=mysql \
		--auth-root-authentication-method=normal --skip-test-db > "$d/install-db.log" 2>&1 \
		|| bad "mariadb-install-db failed: $(tail -n 3 "$d/install-db.log" | tr '\n' ' ')"
	"${XW[@]}" /usr/sbin/mariadbd --no-defaults --datadir="$d/data" --user=mysql \
		--port=$port --bind-address="$TB_SELF_IP" --socket="$d/run/mysqld.sock" \
		--pid-file="$d/run/mariadbd.pid" --skip-name-resolve --log-error="$d/run/error.log" \
		--innodb-buffer-pool-size=32M --max-allowed-packet=64M --skip-log-bin > "$d/mariadbd-out.log" 2>&1 &
	mpid=$!; STOP+=("$mpid")
	wait_for 180 test -S "$d/run/mysqld.sock" || bad "mariadbd did not start: $(tail -n 5 "$d/run/error.log" 2> /dev/null | tr '\n' ' ')"
	grep -q libxway.so "/proc/$mpid/maps" 2> /dev/null || bad "mariadbd (pid $mpid) runs without libxway.so"
	log "mariadbd pid $mpid runs as $(ps -o user= -p "$mpid")"
	# The remote account, made over the Unix socket (no TCP, no shim).
	mariadb --no-defaults -S "$d/run/mysqld.sock" -u root -e \
		"CREATE USER 'xtb'@'%' IDENTIFIED BY 'xtb'; GRANT ALL ON *.* TO 'xtb'@'%';" 2> "$d/grant.log" \
		|| bad "creating the remote account: $(cat "$d/grant.log")"
	wait_for 60 listening $port || bad "mariadbd's listener never reached the broker"
	n0=$(nic_bytes)
	tb_signal mysql/listening
	tb_wait mysql/done 800 > /dev/null || bad "the client never finished"
	n1=$(nic_bytes)
	kill -0 "$mpid" 2> /dev/null || bad "mariadbd exited"
	cp "$d/run/error.log" "$d/mariadbd-error.log" 2> /dev/null
else
	await_peer_listener mysql/listening $port
	db=(--no-defaults --protocol=tcp -h "$TB_PEER_IP" -P $port -u xtb -pxtb)
	sql() { # sql WHAT OUT MARIADB-ARGS...: the client under the shim, bounded
		local what=$1 out=$2; shift 2
		[ ${#err[@]} = 0 ] || { log "$what: not run (an earlier step failed)"; return 1; }
		timeout 150 "${XW[@]}" mariadb "${db[@]}" --connect-timeout=60 --max-allowed-packet=64M -N -B "$@" > "$out" 2>> "$d/client.log" \
			|| { bad "$what failed (exit $?): $(tail -n 2 "$d/client.log" | tr '\n' ' ')"; return 1; }
		log "$what: done"
	}
	n0=$(nic_bytes)
	rows sql > "$d/rows.sql"; rows expected > "$d/rows.expected"
	sql "insert 20000 rows" "$d/out-create" < "$d/rows.sql"
	sql "read the rows" "$d/rows.got" -e 'SELECT id, v, n FROM xc.kv ORDER BY id' \
		&& { cmp -s "$d/rows.expected" "$d/rows.got" && log "20000 rows read back byte-exact" \
			|| bad "the rows read back differ from those inserted"; }
	want=$(awk 'BEGIN { for (i = 0; i < 20000; i++) { s += i; n += i * i - 7 * i } printf "20000\t%.0f\t%.0f\n", s, n }')
	sql "aggregates" "$d/agg" -e 'SELECT COUNT(*), SUM(id), SUM(n) FROM xc.kv' \
		&& { [ "$(cat "$d/agg")" = "$want" ] || bad "aggregates: got '$(cat "$d/agg")', want '$want'"; }
	# Blob: random bytes as a hex literal up, HEX() down, compared as hex.
	head -c "$size" /dev/urandom > "$d/blob.bin"
	od -An -v -tx1 "$d/blob.bin" | tr -d ' \n' | tr a-f A-F > "$d/blob.hex"
	{ printf 'CREATE TABLE xc.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB;\nINSERT INTO xc.blobs VALUES (1, 0x'
	  cat "$d/blob.hex"; printf ');\n'; } > "$d/blob.sql"
	sql "blob up" "$d/out-blob" < "$d/blob.sql"
	sql "blob down" "$d/blob.got" -e 'SELECT HEX(b) FROM xc.blobs WHERE id = 1' \
		&& { [ "$(tr -d '\n' < "$d/blob.got" | sha256sum)" = "$(sha256sum < "$d/blob.hex")" ] \
			&& log "blob read back byte-exact" || bad "the blob read back differs"; }
	sql "server SHA2" "$d/blob.sha" -e 'SELECT SHA2(b, 256) FROM xc.blobs WHERE id = 1' \
		&& { [ "$(cat "$d/blob.sha")" = "$(sha256sum < "$d/blob.bin" | cut -c1-64)" ] || bad "the server's SHA2 of the blob differs"; }
	if [ ${#err[@]} = 0 ]; then
		timeout 300 "${XW[@]}" mysqlslap "${db[@]}" --concurrency=4 --iterations=2 \
			--number-of-queries=200 --auto-generate-sql --auto-generate-sql-load-type=mixed \
			> "$d/mysqlslap.log" 2>&1 || bad "mysqlslap failed: $(tail -n 2 "$d/mysqlslap.log" | tr '\n' ' ')"
		grep -q 'Average number of seconds to run all queries' "$d/mysqlslap.log" && log "mysqlslap: ok" \
			|| bad "mysqlslap printed no result"
	else
		log "mysqlslap: not run (an earlier step failed)"
	fi
	n1=$(nic_bytes)
	tb_signal mysql/done
fi
tb_barrier mysql/end 600 || bad "barrier mysql/end"
# Payload floor: the blob's hex both ways.
verdict $((4 * size)) $((n1 - n0))
finish
