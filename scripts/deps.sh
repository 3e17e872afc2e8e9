#!/bin/sh
# deps.sh — the one dependency step that runs before anything compiles.
#
# Usage: scripts/deps.sh TARGET PACKAGE...
#
# Checks the Debian packages TARGET needs (dpkg-query) and, as root, installs
# the missing ones: one `apt-get update`, one `apt-get install`. Without root:
#   - TARGET build or demo: if only the libibverbs headers (or a C compiler) are
#     missing, it says in one line that the TCP-only binary (CGO_ENABLED=0) is
#     built instead and exits 0; `make build` reads the same facts (cgo_ok).
#   - any other TARGET: one line naming the missing packages and the command
#     that installs them, exit 1, before anything is built.
set -eu

target=${1:?usage: scripts/deps.sh TARGET PACKAGE...}
shift

missing=
for p in "$@"; do
	case " $missing " in *" $p "*) continue ;; esac
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
missing=${missing# }
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps ($target): installing $missing"
	export DEBIAN_FRONTEND=noninteractive
	# -o Dpkg::Use-Pty=0 keeps the log to a few lines; errors still show.
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 $missing >/dev/null
	echo "deps ($target): installed $missing"
	exit 0
fi

case $target in
build | demo)
	# Only the cgo side is optional: the TCP-only binary needs nothing.
	rest=
	for p in $missing; do
		case $p in libibverbs-dev | gcc | libc6-dev) ;; *) rest="$rest $p" ;; esac
	done
	if [ -z "$rest" ]; then
		echo "deps ($target): $missing missing and not root: building the TCP-only binary (CGO_ENABLED=0); for RDMA run: sudo apt-get install $missing"
		exit 0
	fi
	missing=${rest# }
	;;
esac
echo "deps ($target): missing Debian packages: $missing; install them with: sudo apt-get update && sudo apt-get install --no-install-recommends $missing (or run make as root)" >&2
exit 1
