#!/bin/sh
# build.sh — build (or reuse) the testbed guest: a Debian kernel and a small
# busybox initramfs that loads rdma_rxe and friends, mounts the host root over
# 9p with a tmpfs overlay and runs the script named on the kernel command line.
#
# Usage: testbed/guest/build.sh [CACHE_DIR]
# Prints the guest directory (CACHE_DIR/guest-KVER, holding vmlinuz and
# initramfs.cpio.gz) on stdout. Rebuilds only when that directory is missing
# or incomplete, so repeated runs cost nothing.
#
# Environment:
#   TESTBED_KERNEL_PKG  Debian kernel package (default: what linux-image-amd64
#                       depends on, e.g. linux-image-6.1.0-56-amd64).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-$here/../.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

log() { echo "build-guest: $*" >&2; }

# Modules in the order they must be inserted (dependencies first). Order
# matters: crc32_generic must be present or 'rdma link add' fails. tls gives
# the guest kTLS (the host kernel has none); gcm, ghash_generic and ctr give
# it AES-GCM (modules in Debian's kernel, and nothing loads them on demand
# here: TLS_TX fails with ENOENT without them); aesni_intel is the AES-NI
# driver (TCG -cpu max emulates AES-NI), as on a real host. The list is the cache stamp:
# changing it rebuilds the guest.
mods="crc32_generic virtio_pci 9pnet_virtio 9p overlay rdma_rxe virtio_net tls gcm ghash_generic ctr aesni_intel"
fresh() { [ -f "$1/ok" ] && [ "$(cat "$1/ok")" = "$mods" ]; }

kpkg=${TESTBED_KERNEL_PKG:-}
if [ -z "$kpkg" ]; then
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
fi
if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ] && ! ls -d "$cache"/guest-*/ >/dev/null 2>&1; then
	log "no apt lists: apt-get update"
	apt-get update >&2 || true
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
fi
if [ -z "$kpkg" ]; then
	# No apt lists (apt-get update never ran): reuse the newest cached guest.
	last=$(ls -d "$cache"/guest-*/ 2>/dev/null | sort -V | tail -n 1)
	if [ -n "$last" ] && fresh "$last"; then
		echo "${last%/}"
		exit 0
	fi
	log "cannot resolve the kernel package: run 'apt-get update' or set TESTBED_KERNEL_PKG"
	exit 1
fi
kver=${kpkg#linux-image-}
guest=$cache/guest-$kver
if fresh "$guest"; then
	echo "$guest"
	exit 0
fi

# One builder at a time per cache (two engineers, or make -j, may race).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache/.lock"
	flock 9
	if fresh "$guest"; then
		echo "$guest"
		exit 0
	fi
fi

for tool in cpio depmod modprobe dpkg-deb gzip; do
	command -v "$tool" >/dev/null || { log "missing $tool (make testbed-deps)"; exit 1; }
done
# busybox-static installs a statically linked /bin/busybox: the initramfs has
# no libc, so only that one will do.
busybox=/bin/busybox
[ -x "$busybox" ] || { log "missing $busybox (apt-get install busybox-static)"; exit 1; }

log "building guest for $kver in $guest"
tmp=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

deb=$(ls "$cache"/"$kpkg"_*.deb 2>/dev/null | tail -n 1 || true)
if [ -z "$deb" ]; then
	log "apt-get download $kpkg"
	(cd "$tmp" && apt-get download "$kpkg" >&2 2>/dev/null) ||
		(cd "$tmp" && apt-get download "$kpkg" >&2)
	deb=$(ls "$tmp"/"$kpkg"_*.deb)
	mv "$deb" "$cache/"
	deb=$cache/$(basename "$deb")
fi
dpkg-deb -x "$deb" "$tmp/kroot"
# The package ships no modules.dep.
depmod -b "$tmp/kroot" "$kver"

root=$tmp/initramfs
mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" "$root/dev" \
	"$root/host" "$root/rw" "$root/newroot"
: >"$root/lib/modules/order"
for m in $mods; do
	modprobe -d "$tmp/kroot" -S "$kver" --show-depends "$m" | while read -r kind path _; do
		[ "$kind" = insmod ] || continue
		name=$(basename "$path")
		name=${name%.xz}
		name=${name%.zst}
		grep -qx "$name" "$root/lib/modules/order" && continue
		case $path in
		*.xz) xz -dc "$path" >"$root/lib/modules/$name" ;;
		*.zst) zstd -qdc "$path" >"$root/lib/modules/$name" ;;
		*) cp "$path" "$root/lib/modules/$name" ;;
		esac
		echo "$name" >>"$root/lib/modules/order"
	done
done
cp "$busybox" "$root/bin/busybox"
cp "$here/init" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
mkdir -p "$tmp/out"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$tmp/out/initramfs.cpio.gz"
cp "$tmp/kroot/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
# An uncompressed vmlinux boots through its PVH entry point and skips the
# bzImage decompressor, which costs ~2.5 s under TCG. The runner prefers it.
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$tmp/out/vmlinuz" 2>/dev/null | head -n 1 | cut -d: -f1)
if [ -n "$off" ] && tail -c +$((off + 1)) "$tmp/out/vmlinuz" | xz -dc --single-stream >"$tmp/out/vmlinux" 2>/dev/null &&
	[ "$(head -c 4 "$tmp/out/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
	log "extracted vmlinux for PVH boot"
else
	rm -f "$tmp/out/vmlinux"
	log "no vmlinux extracted: booting the bzImage"
fi
echo "$kver" >"$tmp/out/version"
cp "$root/lib/modules/order" "$tmp/out/modules"
echo "$mods" >"$tmp/out/ok"
rm -rf "$guest"
mv "$tmp/out" "$guest"
log "guest ready: $(du -sh "$guest" | cut -f1), modules: $(tr '\n' ' ' <"$guest/modules")"
echo "$guest"
