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
# mode, the verdict and its rules are those of 80-xen-ssh (common part in
# guest/appslib.sh).
set -u
role=$1
app=mysql
need=(/usr/sbin/mariadbd /usr/bin/mariadb /usr/bin/mysqlslap)
mb=${XTB_SQL_MB:-4}
port=3381
# TCP fallback reasons this workload accepts, with why (empty: none).
# The connections are accepted by mariadbd (mysql user), unprivileged: the shim
# cannot open /dev/xen/* (no privilege model yet, DESIGN §7), so it does not
# claim (setup-chan, "uid N cannot open /dev/xen/*") and the offer is
# withdrawn ("withdrawn": by the client when the server speaks first, else at
# the claim timeout); both ends on verified plain TCP.
ALLOW="setup-chan withdrawn"
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

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
	mpid=$!
	wait_for 180 test -S "$d/run/mysqld.sock" || bad "mariadbd did not start: $(tail -n 5 "$d/run/error.log" 2> /dev/null | tr '\n' ' ')"
	daemon_up mariadbd "$mpid" $port
	log "mariadbd pid $mpid runs as $(ps -o user= -p "$mpid")"
	# The remote account, made over the Unix socket (no TCP, no shim).
	mariadb --no-defaults -S "$d/run/mysqld.sock" -u root -e \
		"CREATE USER 'xtb'@'%' IDENTIFIED BY 'xtb'; GRANT ALL ON *.* TO 'xtb'@'%';" 2> "$d/grant.log" \
		|| bad "creating the remote account: $(cat "$d/grant.log")"
	serve_until mysql/done
	kill -0 "$mpid" 2> /dev/null || bad "mariadbd exited"
	cp "$d/run/error.log" "$d/mariadbd-error.log" 2> /dev/null
else
	await_peer_listener mysql/listening $port
	db=(--no-defaults --protocol=tcp -h "$TB_PEER_IP" -P $port -u xtb -pxtb)
	sql() { # sql WHAT OUT MARIADB-ARGS...: the client under the shim, bounded
		local what=$1 out=$2; shift 2
		shimmed "$what" "$d/client.log" mariadb "${db[@]}" --connect-timeout=60 --max-allowed-packet=64M -N -B "$@" > "$out"
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
		&& { [ "$(cat "$d/blob.sha")" = "$(sha "$d/blob.bin")" ] || bad "the server's SHA2 of the blob differs"; }
	if [ ${#err[@]} = 0 ]; then
		timeout 300 "${XW[@]}" mysqlslap "${db[@]}" --concurrency=4 --iterations=2 \
			--number-of-queries=200 --auto-generate-sql --auto-generate-sql-load-type=mixed \
			> "$d/mysqlslap.log" 2>&1 || bad "mysqlslap failed: $(tail -n 2 "$d/mysqlslap.log" | tr '\n' ' ')"
		grep -q 'Average number of seconds to run all queries' "$d/mysqlslap.log" && log "mysqlslap: ok" \
			|| bad "mysqlslap printed no result"
	else
		log "mysqlslap: not run (an earlier step failed)"
	fi
	client_done
fi
# Payload floor: the blob's hex both ways.
conclude $((4 * size))
