#!/usr/bin/env bash
# Packages one built binary (scripts/build-arm.sh TARGET) without rebuilding it:
#   scripts/package-arm.sh TARGET
# Writes to target/dist/ (or $CARGO_TARGET_DIR/dist/):
#   fieldgate-VERSION-TARGET.tar.gz   binary, systemd unit, example configs and
#                                     decoder/rule scripts, SHA256SUMS inside
#   fieldgate_VERSION_ARCH.deb        for aarch64-unknown-linux-musl (arm64) and
#                                     arm-unknown-linux-musleabihf (armhf: ARMv6,
#                                     so it runs on every 32-bit Pi, the Zero too)
#   SHA256SUMS                        of everything in dist/
# Needs cargo-deb for the .deb (cargo install cargo-deb --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:?usage: scripts/package-arm.sh TARGET}
TD=${CARGO_TARGET_DIR:-target}
BIN=$TD/$T/release/fieldgate
DIST=$TD/dist
[ -x "$BIN" ] || { echo "package: no binary at $BIN (run scripts/build-arm.sh $T)" >&2; exit 1; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p "$DIST"

name=fieldgate-$VERSION-$T
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/configs" "$stage/$name/plugins" "$stage/$name/docs"
install -m 755 "$BIN" "$stage/$name/fieldgate"
install -m 644 systemd/fieldgate.service "$stage/$name/"
install -m 644 configs/*.yaml "$stage/$name/configs/"
install -m 644 plugins/*.rhai "$stage/$name/plugins/"
install -m 644 README.md CHANGELOG.md "$stage/$name/"
install -m 644 docs/*.md "$stage/$name/docs/"
(cd "$stage/$name" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)
tar -C "$stage" --owner=0 --group=0 -czf "$DIST/$name.tar.gz" "$name"
echo "package: $DIST/$name.tar.gz"

case "$T" in
  aarch64-*) arch=arm64 ;;
  arm-*) arch=armhf ;;
  *) arch= ;;  # armv7: tarball only (the armhf .deb carries the ARMv6 build)
esac
if [ -n "$arch" ]; then
  deb=$DIST/fieldgate_${VERSION}_$arch.deb
  # the profile already strips; cargo-deb would look for a cross strip tool
  cargo deb --no-build --no-strip --target "$T" --output "$deb"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || { echo "package: $deb is not $arch" >&2; exit 1; }
  echo "package: $deb"
fi
(cd "$DIST" && sha256sum -- *.tar.gz *.deb 2>/dev/null >SHA256SUMS)
