#!/bin/sh
# dbcert-agent package: after the files are removed (deb postrm, rpm %postun).
#
#   deb: $1 = remove | purge | upgrade | disappear | failed-upgrade | abort-install |
#        abort-upgrade
#   rpm: $1 = how many versions remain: 0 = erase, 1 or more = upgrade.
#
# Makes a running systemd forget the removed or replaced unit files. The system user
# and /var/lib/dbcert-agent stay, also on purge: database clients may still read
# credentials from there. Remove them yourself once nothing uses them.
set -e

# live: a running systemd manages this system (not a chroot, an image build, a container
# without systemd, or dpkg --root).
live() { [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; }

# The marker preremove.sh leaves on a deb "remove" is not needed after a purge.
if [ "${1:-}" = purge ]; then
	rm -f "${DPKG_ROOT:-}/var/lib/dbcert-agent/.package-removed"
fi
if live && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || echo "dbcert-agent: systemctl daemon-reload failed" >&2
fi
exit 0
