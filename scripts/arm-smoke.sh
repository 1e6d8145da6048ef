#!/usr/bin/env bash
# ARM smoke test of one built binary under qemu-user:
#   scripts/arm-smoke.sh TARGET [BINARY]   (BINARY default: target/TARGET/release/fieldgate)
# Asserts: the binary is static (no ELF interpreter, no shared libraries) and
# built for the target's architecture (ARMv6 for arm-unknown-*: a single
# ARMv7 object would raise the merged Tag_CPU_arch); `fieldgate check` passes
# on configs/demo.yaml; a demo run publishes readings on its embedded broker
# (read with mosquitto_sub); SIGTERM makes it exit 0. The CPU is emulated as
# the oldest board of the class (ARMv6: arm1176, the Pi Zero / Pi 1 core), so
# an instruction that board lacks fails the run. Prints the wall time of
# `fieldgate check` and of the start up to "fieldgate running" (READY=1).
# Needs: qemu-user, binutils (readelf), mosquitto-clients, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:?usage: scripts/arm-smoke.sh TARGET [BINARY]}
BIN=${2:-${CARGO_TARGET_DIR:-target}/$T/release/fieldgate}
fail() { echo "ARM smoke ($T): $*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
case "$T" in
  aarch64-*) QEMU=(qemu-aarch64 -cpu cortex-a53) machine=AArch64 arch='' ;;
  arm-*) QEMU=(qemu-arm -cpu arm1176) machine=ARM arch='v6 v6K v6KZ' ;;  # not v6T2 (Thumb-2)
  armv7-*) QEMU=(qemu-arm -cpu cortex-a7) machine=ARM arch=v7 ;;
  *) fail "unknown target" ;;
esac
[ -x "$BIN" ] || fail "no binary at $BIN"
readelf -h "$BIN" | grep -q "Machine: *$machine" || fail "$BIN is not an $machine binary"
! readelf -lW "$BIN" | grep -q INTERP || fail "$BIN is dynamically linked (has an ELF interpreter)"
! readelf -dW "$BIN" 2>/dev/null | grep -q NEEDED || fail "$BIN needs shared libraries"
if [ -n "$arch" ]; then
  cpu=$(readelf -A "$BIN" | sed -n 's/^ *Tag_CPU_arch: *//p' | head -1)
  if [ -z "$cpu" ]; then
    echo "note: no Tag_CPU_arch in $BIN (no .ARM.attributes): the qemu run with ${QEMU[*]} is the check"
  else
    [[ " $arch " == *" $cpu "* ]] || fail "Tag_CPU_arch is '$cpu', expected one of: $arch"
  fi
  echo "static $machine binary, Tag_CPU_arch ${cpu:-unknown}, $(stat -c %s "$BIN") bytes"
else
  echo "static $machine binary, $(stat -c %s "$BIN") bytes"
fi

"${QEMU[@]}" "$BIN" --version
t0=$EPOCHREALTIME
"${QEMU[@]}" "$BIN" check -c configs/demo.yaml >/dev/null || fail "fieldgate check failed on configs/demo.yaml"
echo "fieldgate check under ${QEMU[*]}: $(since "$t0") s wall"

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:1883/127.0.0.1:$port/" -e "s|data_dir: ./data|data_dir: $work/data|" \
  configs/demo.yaml >"$work/demo.yaml"
t0=$EPOCHREALTIME
"${QEMU[@]}" "$BIN" run -c "$work/demo.yaml" 2>"$work/log" &
pid=$!
# the broker listens before "fieldgate running" is logged (up to 60 s under emulation)
for _ in $(seq 600); do
  grep -q "fieldgate running" "$work/log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/log"; fail "exited during start-up"; }
  sleep 0.1
done
grep -q "fieldgate running" "$work/log" || { cat "$work/log"; fail "not running after 60 s"; }
echo "start-up to \"fieldgate running\" (READY=1) under qemu: $(since "$t0") s wall"
got=$(timeout 30 mosquitto_sub -h 127.0.0.1 -p "$port" -t 'demo-gw/boiler/temperature' -C 5 -W 30 || true)
echo "$got"
[ "$(grep -c '"quality":"good"' <<<"$got")" -eq 5 ] || { cat "$work/log"; fail "5 readings did not arrive through the embedded broker"; }
kill -TERM "$pid"
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { cat "$work/log"; fail "still running 30 s after SIGTERM"; }
rc=0; wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || { cat "$work/log"; fail "exit code $rc after SIGTERM, expected 0"; }
echo "ARM smoke test passed: $BIN under ${QEMU[*]}: check, readings through the embedded broker, SIGTERM exit 0"
