#!/bin/sh
# dbcert-agent package: before the files are removed (deb prerm, rpm %preun).
#
#   deb: $1 = remove on a real removal; upgrade | deconfigure | failed-upgrade otherwise.
#   rpm: $1 = how many versions remain afterwards: 0 = erase, 1 or more = upgrade.
#
# Only a real removal stops and disables the units; an upgrade leaves the running agent
# alone (the new version's postinstall restarts it). Works without systemd and honours
# DPKG_ROOT, like postinstall.sh.
set -e

# live: a running systemd manages this system (not a chroot, an image build, a container
# without systemd, or dpkg --root).
live() { [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; }

case "${1:-}" in
remove | 0) ;;
*) exit 0 ;;
esac

root=${DPKG_ROOT:-}
units="dbcert-agent.service dbcert-agent-once.service"
# Tells postinstall.sh that installing again is a fresh install (see there).
if [ "$1" = remove ] && [ -d "$root/var/lib/dbcert-agent" ]; then
	true >"$root/var/lib/dbcert-agent/.package-removed" || true
fi
command -v systemctl >/dev/null 2>&1 || exit 0

if live; then
	# $units is split into words on purpose.
	systemctl stop $units || echo "dbcert-agent: stopping $units failed" >&2
fi
systemctl ${root:+--root="$root"} --no-reload disable $units ||
	echo "dbcert-agent: disabling $units failed" >&2
exit 0
