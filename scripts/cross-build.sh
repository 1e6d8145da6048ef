#!/usr/bin/env bash
# Builds fieldgate for Raspberry Pi targets without Docker, with Debian's
# cross compilers. Usage:
#   scripts/cross-build.sh --install            # apt-get + rustup the toolchains (root)
#   scripts/cross-build.sh [TARGET...]          # default: aarch64 and armv7
#   PROFILE=dev scripts/cross-build.sh aarch64-unknown-linux-gnu
# Targets:
#   aarch64-unknown-linux-gnu      Pi 3/4/5 with a 64-bit OS    (gcc-aarch64-linux-gnu)
#   armv7-unknown-linux-gnueabihf  Pi 2/3/4 with a 32-bit OS    (gcc-arm-linux-gnueabihf)
#   arm-unknown-linux-gnueabihf    Pi Zero / Pi 1 (ARMv6)       (needs cargo-zigbuild: Debian's
#                                  armhf libc is ARMv7 and would not run on ARMv6)
# The binaries link against the build machine's glibc (Debian 12: 2.36, they
# need >= 2.34, i.e. Raspberry Pi OS Bookworm). For Bullseye (glibc 2.31) use
# cargo-zigbuild with a glibc suffix: TARGET=aarch64-unknown-linux-gnu.2.31.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}

install() {
  apt-get update -qq
  apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user >/dev/null
  rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
}

build() {
  local target=$1 gcc
  case "$target" in
    aarch64-unknown-linux-gnu) gcc=aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) gcc=arm-linux-gnueabihf ;;
    arm-unknown-linux-gnueabihf|*.2.*)
      command -v cargo-zigbuild >/dev/null || {
        echo "$target needs cargo-zigbuild (pip install ziglang; cargo install cargo-zigbuild)" >&2
        return 1
      }
      rustup target add "${target%%.2.*}"
      cargo zigbuild --locked --profile "$PROFILE" --target "$target"
      return ;;
    *) echo "unknown target $target" >&2; return 1 ;;
  esac
  local up
  up=$(echo "$target" | tr 'a-z-' 'A-Z_')
  env "CARGO_TARGET_${up}_LINKER=${gcc}-gcc" \
      "CC_${target//-/_}=${gcc}-gcc" "AR_${target//-/_}=${gcc}-ar" \
      cargo build --locked --profile "$PROFILE" --target "$target"
  local dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
  echo "built target/$target/$dir/fieldgate"
}

if [ "${1:-}" = "--install" ]; then install; exit 0; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
for t in "${targets[@]}"; do build "$t"; done
