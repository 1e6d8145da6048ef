#!/usr/bin/env bash
# Checks a fieldgate .deb:
#   scripts/check-deb.sh DEB ARCH     (ARCH: arm64 or armhf)
# the Architecture field, the files (binary, config, unit, docs, examples),
# the config as a conffile, the maintainer script that creates the user and
# enables the unit, `dpkg-deb --info`, and the packaged binary itself: static,
# for ARCH, and `fieldgate check` on the packaged config under qemu-user with
# the oldest CPU of the class (armhf: arm1176, the Pi Zero / Pi 1 core).
set -euo pipefail
deb=${1:?usage: scripts/check-deb.sh DEB ARCH}
want=${2:?usage: scripts/check-deb.sh DEB ARCH}
fail() { echo "check-deb: $deb: $*" >&2; exit 1; }
case "$want" in
  arm64) QEMU=(qemu-aarch64 -cpu cortex-a53) machine=AArch64 ;;
  armhf) QEMU=(qemu-arm -cpu arm1176) machine=ARM ;;
  *) fail "unknown architecture $want" ;;
esac
dpkg-deb --info "$deb"
arch=$(dpkg-deb -f "$deb" Architecture)
[ "$arch" = "$want" ] || fail "Architecture is $arch, expected $want"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/fieldgate ./etc/fieldgate/fieldgate.yaml ./usr/share/doc/fieldgate/README ./usr/share/doc/fieldgate/docs/configuration.md \
  ./usr/share/doc/fieldgate/examples/configs/demo.yaml ./usr/share/doc/fieldgate/examples/plugins/keyvalue.rhai; do
  grep -q " $f\$" <<<"$contents" || fail "missing $f"
done
grep -qE " \./(usr/)?lib/systemd/system/fieldgate\.service\$" <<<"$contents" || fail "missing the systemd unit"
grep -qE "^-rw-r----- .* \./etc/fieldgate/fieldgate\.yaml\$" <<<"$contents" || fail "config is not mode 0640"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/ctl"
grep -qx /etc/fieldgate/fieldgate.yaml "$work/ctl/conffiles" || fail "config is not a conffile"
grep -q "adduser --system" "$work/ctl/postinst" || fail "postinst does not create the user"
grep -q "adduser fieldgate dialout" "$work/ctl/postinst" || fail "postinst does not add the user to dialout"
grep -q "deb-systemd-helper enable\|systemctl.*enable" "$work/ctl/postinst" || fail "postinst does not enable the unit"
grep -q "deb-systemd-helper\|systemctl" "$work/ctl/postrm" || fail "postrm does not clean up the unit"

dpkg-deb -x "$deb" "$work/root"
bin=$work/root/usr/bin/fieldgate
readelf -h "$bin" | grep -q "Machine: *$machine" || fail "usr/bin/fieldgate is not an $machine binary"
! readelf -lW "$bin" | grep -q INTERP || fail "usr/bin/fieldgate is dynamically linked"
"${QEMU[@]}" "$bin" --version
"${QEMU[@]}" "$bin" check -c "$work/root/etc/fieldgate/fieldgate.yaml" >/dev/null \
  || fail "the packaged binary fails 'fieldgate check' on the packaged config under ${QEMU[*]}"
echo "check-deb: $deb OK ($(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) $arch," \
  "static, runs under ${QEMU[*]})"
awk '{print "  " $1 " " $6}' <<<"$contents"
