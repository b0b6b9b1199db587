#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Xen test bed (`make test-xen`): a real Xen 4.17 hypervisor booted under
# QEMU (TCG software emulation: this machine's KVM cannot run Xen), a PV dom0
# that creates two PV domUs on a bridge, and workloads run in the domUs by
# role (tools/xen-testbed/workloads/).  Stages, each announced with the
# elapsed time: dependencies, build, guest tree (debootstrap, cached per
# package versions), staging, disk images, boot and run, collect, report.
# Exits non-zero if any stage or workload fails.  All waits are bounded;
# QEMU is killed by its pid on timeout; the work directory is removed.
#
#   tools/xen-testbed/run.sh [--interactive] [--no-build] [--keep]
#   XEN_TESTBED_INTERACTIVE=1   same as --interactive: console on stdio,
#                               nothing powers off (leave QEMU with Ctrl-A x)
#   XEN_TESTBED_CACHE=DIR       guest tree cache (/var/cache/xway-xen-testbed)
#   XEN_TESTBED_OUT=DIR         results and console log (build/xen-testbed)
#   XEN_TESTBED_TIMEOUT=S       limit for boot + workloads (4200)
#   XEN_TESTBED_BYTES=N[KMG]    transfer size per test (64M)
#   XEN_TESTBED_PINGS=N         ping-pong round trips per test (1000)
#   XEN_TESTBED_SCALE=1         also run workload 72 (1000 connections at once)
#   XEN_TESTBED_PROFILE=1       workload 70 ends with a short churn under strace
#                               (both applications and brokers; raw/*/prof.*)
#   XEN_TESTBED_APPS=0          skip workloads 80-88 (ssh, apache2, vsftpd,
#                               MariaDB, iperf3, sockperf, proftpd, telnet, samba)
#   XEN_TESTBED_ONLY="50 90"    run only the workloads whose names start
#                               with one of these prefixes (development)
# Runs on one machine queue behind each other (flock on the cache): two
# emulated machines on two cores would only slow each other past limits.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
TB_T0=$(date +%s)
. "$here/lib.sh"

interactive=${XEN_TESTBED_INTERACTIVE:-0}
build=1
keep=0
for a in "$@"; do
	case "$a" in
	--interactive) interactive=1 ;;
	--no-build)    build=0 ;;
	--keep)        keep=1 ;;
	-h|--help)     sed -n '3,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option '$a' (see --help)" >&2; exit 2 ;;
	esac
done
cache=${XEN_TESTBED_CACHE:-/var/cache/xway-xen-testbed}
outdir=${XEN_TESTBED_OUT:-$repo/${B:-build}/xen-testbed}
limit=${XEN_TESTBED_TIMEOUT:-4200}
bytes=${XEN_TESTBED_BYTES:-64M}
pings=${XEN_TESTBED_PINGS:-1000}
case "$limit$pings" in *[!0-9]*) tb_die "XEN_TESTBED_TIMEOUT and XEN_TESTBED_PINGS must be numbers" ;; esac
[[ "$bytes" =~ ^[0-9]+[KMG]?$ ]] || tb_die "XEN_TESTBED_BYTES must be a number with an optional K, M or G"
only=$(echo "${XEN_TESTBED_ONLY:-}" | tr ',' ' ')
for p in $only; do
	[[ "$p" =~ ^[0-9A-Za-z_-]+$ ]] || tb_die "XEN_TESTBED_ONLY: '$p' is not a workload name prefix"
done
selected() { # selected NAME: is workload NAME in this run?
	local p
	[ -z "$only" ] && return 0
	for p in $only; do case "$1" in "$p"*) return 0 ;; esac; done
	return 1
}

[ "$(id -u)" = 0 ] || tb_die "needs root (debootstrap, chroot, image building)"

# ---- dependencies and build ------------------------------------------------
tb_say "dependencies (tools/install-deps.sh xen)"
"$repo/tools/install-deps.sh" xen > /dev/null || tb_die "installing the host packages failed"
for c in qemu-system-x86_64 debootstrap mkfs.ext4 debugfs python3; do
	command -v "$c" > /dev/null || tb_die "$c missing after install-deps"
done
if [ $build = 1 ]; then
	tb_say "build (make)"
	make -C "$repo" --no-print-directory -j2 build-all > /dev/null || tb_die "make failed"
fi
bdir=$repo/${B:-build}
[ -x "$bdir/xen-testbed/xtb-vchan" ] || tb_die "$bdir/xen-testbed/xtb-vchan not built (run make)"

# ---- work directory, cleaned on exit --------------------------------------
mkdir -p "$cache" "$outdir"
exec 9> "$cache/.run.lock"
if ! flock -n 9; then
	tb_say "another test-bed run holds $cache/.run.lock: waiting (up to 60 min)"
	flock -w 3600 9 || tb_die "the other test-bed run did not finish within 60 min"
fi
work=$(mktemp -d "$cache/run.XXXXXX")
qpid=
cleanup() {
	if [ -n "$qpid" ] && kill -0 "$qpid" 2> /dev/null; then
		kill "$qpid" 2> /dev/null || true
		sleep 1
		kill -9 "$qpid" 2> /dev/null || true
	fi
	if [ $keep = 1 ]; then
		echo "run.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- guest tree (cached) ---------------------------------------------------
tree=$(tb_tree "$cache")
kver=$(ls "$tree/lib/modules" | sort -V | tail -n1)

# ---- staging: a hard-linked copy of the tree plus this run's files --------
# Never write into a file of the copy in place: it shares its inode with the
# cached tree.  put() unlinks first.
tb_say "staging the guest files"
stage=$work/root
cp -al "$tree" "$stage"
put() { # put MODE SRC DST
	mkdir -p "$(dirname "$stage$3")"
	rm -f "$stage$3"
	install -m "$1" "$2" "$stage$3"
}
put 0755 "$bdir/xen-testbed/xtb-vchan" /opt/xway/bin/xtb-vchan
[ -x "$bdir/xen-testbed/xtb-conns" ] && put 0755 "$bdir/xen-testbed/xtb-conns" /opt/xway/bin/xtb-conns
for f in xwayd xwayctl; do
	[ -x "$bdir/$f" ] && put 0755 "$bdir/$f" "/opt/xway/bin/$f"
done
[ -f "$bdir/libxway.so" ] && put 0644 "$bdir/libxway.so" /opt/xway/lib/libxway.so
# The shim's integration test programs (60-/61- workloads).
for f in tests/shim/xway-tcpsem tests/lifecycle/xway-lc; do
	[ -x "$bdir/$f" ] && put 0755 "$bdir/$f" "/opt/xway/bin/${f##*/}"
done
put 0755 "$repo/tools/xen-setup/xway-xen-setup" /opt/xway/bin/xway-xen-setup
for f in "$repo/tools/bench/xway-vchan-test" "$bdir/xway-vchan-test" \
	 "$bdir/tools/bench/xway-vchan-test"; do
	if [ -x "$f" ] && [ -f "$f" ]; then
		put 0755 "$f" /opt/xway/bin/xway-vchan-test; break
	fi
done
for f in "$here"/guest/*.sh; do
	put 0755 "$f" "/opt/xway-testbed/guest/${f##*/}"
done
nsel=0
for f in "$here"/workloads/*.sh; do
	n=${f##*/}
	# Every workload is there for another to run (72 runs 70 in push
	# mode); only the selected ones are in the directory domu.sh runs.
	put 0755 "$f" "/opt/xway-testbed/all/$n"
	selected "${n%.sh}" || continue
	put 0755 "$f" "/opt/xway-testbed/workloads/$n"; nsel=$((nsel + 1))
done
[ $nsel -gt 0 ] || tb_die "XEN_TESTBED_ONLY='$only' selects no workload"
[ -n "$only" ] && tb_say "only the workloads starting with: $only ($nsel)"
cat > "$work/config" <<EOF
# Written by run.sh for this run.
TB_SRV_IP=192.0.2.11
TB_CLI_IP=192.0.2.12
TB_BYTES=$bytes
TB_PINGS=$pings
TB_VCHAN_RING=256K
TB_IPERF_SECONDS=10
# Emulation speed varies tenfold with the host's load: generous limits.
TB_PROBE_TIMEOUT=400
# 72 (1000 connections at once, set up at ~2/s emulated) needs longer.
TB_WORKLOAD_TIMEOUT=$([ "${XEN_TESTBED_SCALE:-0}" = 1 ] && echo 1500 || echo 900)
TB_BARRIER_TIMEOUT=900
TB_DOMU_TIMEOUT=$(( limit - 300 > 300 ? limit - 300 : 300 ))
# Workload 72 (the push to 1000 connections) runs only when asked for.
TB_SCALE=${XEN_TESTBED_SCALE:-0}
# Workload 70's profiling churn (strace of the applications and brokers).
TB_PROFILE=${XEN_TESTBED_PROFILE:-0}
# Workloads 80-88 (the apps across domains) run unless told not to.
TB_APPS=${XEN_TESTBED_APPS:-1}
EOF
put 0644 "$work/config" /opt/xway-testbed/config
# The boot unit, and quiet consoles: a getty on hvc0 hangs up the console
# and the test's output vanishes (kept in interactive mode to log in).
put 0644 "$here/xway-testbed.service" /etc/systemd/system/xway-testbed.service
mkdir -p "$stage/etc/systemd/system/multi-user.target.wants"
ln -sfn /etc/systemd/system/xway-testbed.service \
	"$stage/etc/systemd/system/multi-user.target.wants/xway-testbed.service"
# The application servers of the 8x workloads start only when a workload
# starts them (at every boot they would cost emulated minutes).
masks="apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer
       systemd-timesyncd.service xendomains.service
       ssh.service ssh.socket apache2.service apache-htcacheclean.service
       nginx.service vsftpd.service mariadb.service
       smbd.service nmbd.service samba-ad-dc.service
       inetutils-inetd.service inetutils-syslogd.service"
[ "$interactive" = 1 ] || masks="$masks serial-getty@hvc0.service getty@.service"
for u in $masks; do
	rm -f "$stage/etc/systemd/system/$u"
	ln -s /dev/null "$stage/etc/systemd/system/$u"
done
# Keep the domUs' consoles in dom0: a new file, never an in-place edit.
grep -v '^XENCONSOLED_ARGS=' "$stage/etc/default/xen" > "$work/default-xen" || true
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> "$work/default-xen"
put 0644 "$work/default-xen" /etc/default/xen
mkdir -p "$stage/var/log/xen/console"
if [ "$interactive" = 1 ]; then
	rm -f "$stage/etc/shadow.new"
	sed 's/^root:[^:]*:/root::/' "$stage/etc/shadow" > "$stage/etc/shadow.new"
	rm -f "$stage/etc/shadow"; mv "$stage/etc/shadow.new" "$stage/etc/shadow"
	chmod 0640 "$stage/etc/shadow"
fi

# ---- disk images -----------------------------------------------------------
tb_say "disk images (mkfs.ext4 -d): dom0, server, client"
mkfs.ext4 -q -F -L xtb-root -d "$stage" "$work/dom0.img" 3G > "$work/mkfs.log" 2>&1 \
	|| { cat "$work/mkfs.log" >&2; tb_die "mkfs.ext4 failed"; }
cp --sparse=always "$work/dom0.img" "$work/server.img"
cp --sparse=always "$work/dom0.img" "$work/client.img"
rm -rf "$stage"
zcat "$tree/boot/xen-4.17-amd64.gz" > "$work/xen.elf"
cp "$tree/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$tree/boot/initrd.img-$kver" "$work/initrd.img"

# ---- boot --------------------------------------------------------------------
# Facts of this machine (see docs/XEN.md): TCG, not KVM; -cpu Westmere;
# Xen needs smap=0 or dom0 dies at its first page fault.  -nic none: the
# guests' bridge exists only inside the emulated machine.
qemu=(qemu-system-x86_64 -accel tcg,thread=multi,tb-size=512 -machine pc
      -cpu Westmere -smp 2 -m 3072 -no-reboot -nic none
      -kernel "$work/xen.elf"
      -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 noreboot smap=0"
      -initrd "$work/vmlinuz root=/dev/vda rw console=hvc0 earlyprintk=xen xway.role=dom0 xway.interactive=$interactive,$work/initrd.img"
      -drive "file=$work/dom0.img,if=virtio,format=raw"
      -drive "file=$work/server.img,if=virtio,format=raw"
      -drive "file=$work/client.img,if=virtio,format=raw")
if [ "$interactive" = 1 ]; then
	tb_say "interactive: Xen + dom0 on this terminal; log in as root (no password)"
	tb_say "  the domUs run their set-up and stay up: xl list; xl console xtb-server"
	tb_say "  leave QEMU with Ctrl-A x"
	"${qemu[@]}" -nographic -serial mon:stdio
	exit 0
fi
console=$work/console.log
tb_say "boot: Xen 4.17 + dom0 ($kver) under QEMU TCG (limit ${limit}s)"
"${qemu[@]}" -display none -monitor none -serial "file:$console" < /dev/null \
	> "$work/qemu.out" 2>&1 &
qpid=$!
# Relay the guests' progress lines ("[xtb ...]") while waiting.
shown=0
deadline=$(( $(date +%s) + limit ))
timed_out=0
while kill -0 "$qpid" 2> /dev/null; do
	if [ "$(date +%s)" -ge "$deadline" ]; then
		timed_out=1
		tb_say "timeout after ${limit}s: killing QEMU (pid $qpid)"
		kill "$qpid" 2> /dev/null || true
		break
	fi
	sleep 3
	if [ -f "$console" ]; then
		n=$(wc -l < "$console")
		if [ "$n" -gt "$shown" ]; then
			sed -n "$((shown + 1)),${n}p" "$console" | tr -d '\r' \
				| grep -a '\[xtb ' | grep -av '    | ' | sed 's/^.*\(\[xtb \)/       \1/' || true
			shown=$n
		fi
	fi
done
wait "$qpid" 2> /dev/null || true
qpid=
tb_say "QEMU exited"

# ---- collect ---------------------------------------------------------------
raw=$work/raw
mkdir -p "$raw/server" "$raw/client"
for r in server client; do
	# rdump makes $raw/$r/results.
	debugfs -R "rdump /var/lib/xway-testbed/results $raw/$r" "$work/$r.img" > /dev/null 2>&1 || true
	[ -d "$raw/$r/results" ] && mv "$raw/$r/results/"* "$raw/$r/" 2> /dev/null
	rmdir "$raw/$r/results" 2> /dev/null || true
done
debugfs -R "cat /var/lib/xway-testbed/dom0.status" "$work/dom0.img" 2> /dev/null \
	> "$raw/dom0.status" || true
[ $timed_out = 1 ] && echo "qemu-timeout" >> "$raw/dom0.status"

# ---- report ----------------------------------------------------------------
run=$outdir/last
rm -rf "$run"; mkdir -p "$run"
cp -r "$raw" "$run/raw"
tr -d '\r' < "$console" > "$run/console.log" 2> /dev/null || true
tb_say "report"
rc=0
python3 "$here/report.py" "$run/raw" "$run/results.txt" \
	--elapsed "$(( $(date +%s) - TB_T0 ))" --only "$only" || rc=$?
cat "$run/results.txt" 2> /dev/null || true
tb_say "results: $run/results.txt; console: $run/console.log"
[ $rc = 0 ] && tb_say "PASS" || tb_say "FAIL"
exit $rc
