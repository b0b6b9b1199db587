# SPDX-License-Identifier: MIT
# Host-side helpers of the Xen test bed, sourced by run.sh: progress lines,
# the mirror lookup and the cached guest tree.  Everything here runs on the
# host as root; nothing runs inside the guest.

TB_T0=${TB_T0:-$(date +%s)}

# One progress line per stage, with the elapsed time since run.sh started.
tb_say() { printf '== [%4ss] %s\n' "$(( $(date +%s) - TB_T0 ))" "$*"; }
tb_die() { printf '== [%4ss] FAIL: %s\n' "$(( $(date +%s) - TB_T0 ))" "$*" >&2; exit 1; }

# The Debian mirror this machine's apt already uses for bookworm.  Read at
# run time from the apt sources (deb822 .sources files or the one-line
# format) so that no mirror name is written into the repository.
tb_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		# deb822: a blank line ends a stanza; take the first stanza of
		# Types "deb" whose Suites include plain "bookworm".
		awk '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ / bookworm /) {
					split(uris, u, " "); print u[1]; found = 1; exit
				}
				types = ""; uris = ""; suites = ""
			}
			/^[ \t]*$/ { flush(); next }
			/^Types:/  { sub(/^Types:[ \t]*/, "");  types = $0 }
			/^URIs:/   { sub(/^URIs:[ \t]*/, "");   uris = $0 }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
			END { if (!found) flush() }
		' "$f" | head -n1 | grep . && return 0
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk '$1 == "deb" {
			i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
			if ($(i + 1) == "bookworm") { print $i; exit }
		}' "$f" | head -n1 | grep . && return 0
	done
	return 1
}

# Packages of the guest root file system (dom0 and both domUs share it).
# The servers from the third line on are for the 8x application
# workloads, which start them; run.sh masks their units.  The lib*
# packages on the last line are proftpd-core's libraries (see below).
TB_GUEST_PKGS=(xen-system-amd64 xen-utils-4.17 xenstore-utils libxen-dev
	linux-image-amd64 initramfs-tools systemd-sysv udev kmod iproute2
	bridge-utils iperf3 procps libglib2.0-0 strace
	openssh-server openssh-client apache2 nginx curl vsftpd
	mariadb-server mariadb-client sockperf inetutils-inetd inetutils-telnetd
	inetutils-telnet samba smbclient
	libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3)
# Packages unpacked (dpkg-deb -x, never installed) into /opt/unpacked/<name>
# of the tree: proftpd-core conflicts with vsftpd (both are ftp-server), so
# workload 86 runs its binary from there (its libraries are installed above).
TB_GUEST_UNPACK=(proftpd-core)

# Cache key: the package list plus each package's candidate version in the
# host's apt lists (same mirror, same release), plus the version of the
# recipe below, so a change to either builds a new tree.
TB_TREE_RECIPE=3
tb_tree_key() {
	local p v
	{
		echo "recipe $TB_TREE_RECIPE"
		for p in "${TB_GUEST_PKGS[@]}" unpack "${TB_GUEST_UNPACK[@]}"; do
			v=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
			echo "$p ${v:-unknown}"
		done
	} | sha256sum | cut -c1-16
}

# Build (or reuse) the guest tree and print its path.  The tree is never
# modified after it is complete: run.sh hard-link copies it and only adds
# new files to the copy.
tb_tree() {
	local cache=$1 key tree tmp mirror kver
	key=$(tb_tree_key)
	tree=$cache/tree-$key
	if [ -e "$tree/.complete" ]; then
		tb_say "guest tree: cached ($tree)" >&2
		echo "$tree"; return 0
	fi
	mirror=$(tb_mirror) || tb_die "no bookworm mirror found in the apt sources"
	tmp=$cache/tree-$key.tmp
	rm -rf "$tmp"; mkdir -p "$cache"
	tb_say "guest tree: debootstrap --variant=minbase (a few minutes)" >&2
	local inc; inc=$(IFS=,; echo "${TB_GUEST_PKGS[*]}")
	if ! timeout 1800 debootstrap --variant=minbase --include="$inc" \
			bookworm "$tmp" "$mirror" > "$cache/debootstrap.log" 2>&1; then
		tail -n 20 "$cache/debootstrap.log" >&2
		tb_die "debootstrap failed (log: $cache/debootstrap.log)"
	fi
	tb_say "guest tree: configuring" >&2
	tb_tree_config "$tmp" || tb_die "configuring the guest tree failed"
	touch "$tmp/.complete"
	mv "$tmp" "$tree"
	# Keep only the newest tree: an old key is never used again.
	find "$cache" -maxdepth 1 -name 'tree-*' ! -name "tree-$key" -exec rm -rf {} +
	echo "$tree"
}

# The little configuration that belongs to the cached tree: host name and
# a small initrd.  Everything else (boot unit, masks, xway build,
# workloads, config) is added by run.sh to a hard-linked copy per run.
tb_tree_config() {
	local t=$1 kver
	kver=$(ls "$t/lib/modules" | sort -V | tail -n1)
	[ -n "$kver" ] || { echo "no kernel in the tree" >&2; return 1; }
	echo xway-xen > "$t/etc/hostname"
	# Small initrd: only the modules needed to mount root (6 MB instead of
	# 36 MB, much faster to load under emulation).
	sed -i 's/^MODULES=.*/MODULES=list/' "$t/etc/initramfs-tools/initramfs.conf"
	printf '%s\n' xen-blkfront virtio_blk virtio_pci ext4 crc32c_generic \
		>> "$t/etc/initramfs-tools/modules"
	chroot "$t" mkinitramfs -o "/boot/initrd.img-$kver" "$kver" || return 1
	# The unpacked packages: the host's apt fetches the candidate version
	# (the one in the cache key) from the same mirror.
	local p dl
	dl=$(mktemp -d) && chmod 0755 "$dl" || return 1
	for p in "${TB_GUEST_UNPACK[@]}"; do
		( cd "$dl" && timeout 300 apt-get download -q "$p" ) > "$dl/log" 2>&1 \
			|| { cat "$dl/log" >&2; rm -rf "$dl"; return 1; }
		mkdir -p "$t/opt/unpacked/$p"
		dpkg-deb -x "$dl/${p}_"*.deb "$t/opt/unpacked/$p" || { rm -rf "$dl"; return 1; }
	done
	rm -rf "$dl"
	rm -rf "$t/var/cache/apt/archives/"*.deb
}
