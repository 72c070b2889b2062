#!/bin/sh
# dbcert-agent package: after the files are installed (deb postinst, rpm %post).
#
#   deb: $1 = configure, $2 = the previously configured version ("" on a fresh install);
#        abort-upgrade | abort-remove | abort-deconfigure when dpkg rolls back.
#   rpm: $1 = how many versions are installed now: 1 = fresh install, 2 or more = upgrade.
#
# Creates the system user and /var/lib/dbcert-agent, makes systemd re-read its units,
# enables (but does not start) dbcert-agent.service on a fresh install, and restarts it
# on an upgrade when it is running. Every systemd step is skipped when its tool is
# missing or systemd is not running (containers, chroots, image builds), so the package
# installs anywhere. With DPKG_ROOT set (dpkg --root with --force-script-chrootless)
# the offline steps act on that root and nothing touches the running system.
set -e

unit=dbcert-agent.service
root=${DPKG_ROOT:-}
# Left by preremove.sh on a deb "remove", which disables the units: installing again
# from the config-files state passes an old version in $2 but is a fresh install.
removed="$root/var/lib/dbcert-agent/.package-removed"

case "${1:-}" in
configure) if [ -n "${2:-}" ] && [ ! -e "$removed" ]; then mode=upgrade; else mode=install; fi ;;
abort-upgrade | abort-remove | abort-deconfigure) mode=upgrade ;;
[0-9]*) if [ "$1" -ge 2 ]; then mode=upgrade; else mode=install; fi ;;
*) exit 0 ;;
esac

have() { command -v "$1" >/dev/null 2>&1; }
warn() { echo "dbcert-agent: $*" >&2; }
# live: a running systemd manages this system (not a chroot, an image build, a container
# without systemd, or dpkg --root).
live() { [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; }

# The system user (the unit runs as root unless a drop-in sets User=dbcert-agent).
if have systemd-sysusers; then
	systemd-sysusers ${root:+--root="$root"} dbcert-agent.conf ||
		warn "systemd-sysusers failed; create the system user dbcert-agent yourself"
elif ! grep -q '^dbcert-agent:' "$root/etc/passwd" 2>/dev/null; then
	if have useradd; then
		useradd ${root:+--root "$root"} --system --user-group --no-create-home \
			--home-dir /var/lib/dbcert-agent --shell /usr/sbin/nologin \
			--comment "dbcert-agent daemon" dbcert-agent ||
			warn "useradd failed; create the system user dbcert-agent yourself"
	else
		warn "neither systemd-sysusers nor useradd found; system user dbcert-agent not created"
	fi
fi

# The default output root.
if have systemd-tmpfiles; then
	systemd-tmpfiles ${root:+--root="$root"} --create dbcert-agent.conf ||
		warn "systemd-tmpfiles failed; create /var/lib/dbcert-agent (root, 0755) yourself"
else
	mkdir -p "$root/var/lib/dbcert-agent" && chmod 0755 "$root/var/lib/dbcert-agent" ||
		warn "could not create /var/lib/dbcert-agent"
fi

# "enable" only creates links, so it also works offline (with --root, or in a chroot).
enabled=no
if [ "$mode" = install ] && have systemctl; then
	if systemctl ${root:+--root="$root"} --no-reload enable "$unit"; then
		enabled=yes
	else
		warn "could not enable $unit; run: systemctl enable $unit"
	fi
fi

if live && have systemctl; then
	systemctl daemon-reload || warn "systemctl daemon-reload failed"
	if [ "$mode" = upgrade ]; then
		systemctl try-restart "$unit" || warn "restarting $unit failed; see: journalctl -u $unit"
	fi
fi

rm -f "$removed"
if [ "$mode" = install ]; then
	state=installed
	[ "$enabled" = no ] || state="installed and enabled (not started)"
	echo "dbcert-agent: $state. Edit /etc/dbcert-agent/agent.hcl, check it with"
	echo "\"dbcert-agent validate\", then run: systemctl start dbcert-agent"
fi
exit 0
