#!/usr/bin/env bash
# Checks a fieldgate .deb: the binary for the right architecture, the unit,
# the config as a conffile, and the maintainer script that creates the user.
set -euo pipefail
deb=$1
fail() { echo "check-deb: $*" >&2; exit 1; }
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/fieldgate ./etc/fieldgate/fieldgate.yaml ./usr/share/doc/fieldgate/README; do
  grep -q " $f\$" <<<"$contents" || fail "missing $f"
done
grep -qE " \./(usr/)?lib/systemd/system/fieldgate\.service\$" <<<"$contents" || fail "missing the systemd unit"
[ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || fail "architecture is $(dpkg-deb -f "$deb" Architecture)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/ctl"
grep -qx /etc/fieldgate/fieldgate.yaml "$work/ctl/conffiles" || fail "config is not a conffile"
grep -q "adduser --system" "$work/ctl/postinst" || fail "postinst does not create the user"
grep -q "deb-systemd-helper\|systemctl" "$work/ctl/postinst" || fail "postinst does not enable the unit"
echo "check-deb: $deb OK ($(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) $(dpkg-deb -f "$deb" Architecture))"
dpkg-deb -c "$deb" | awk '{print "  " $6}'
