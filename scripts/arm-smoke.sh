#!/usr/bin/env bash
# ARM smoke test: builds fieldgate for aarch64 (PROFILE, default release),
# runs `fieldgate check` and a short demo run of that binary under
# qemu-user, and asserts that readings arrive on its embedded broker.
# Needs: scripts/cross-build.sh --install (cross gcc, qemu-user, the rust
# target) and mosquitto-clients.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
T=aarch64-unknown-linux-gnu
scripts/cross-build.sh "$T"
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
BIN=target/$T/$dir/fieldgate
QEMU="qemu-aarch64 -L /usr/aarch64-linux-gnu"
aarch64-linux-gnu-readelf -h "$BIN" | grep -q AArch64 || { echo "not an aarch64 binary: $BIN" >&2; exit 1; }
echo "glibc symbols needed: $(aarch64-linux-gnu-objdump -T "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 || echo unknown)"
$QEMU "$BIN" --version
$QEMU "$BIN" check -c configs/demo.yaml >/dev/null

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:1883/127.0.0.1:$port/" -e "s|data_dir: ./data|data_dir: $work/data|" configs/demo.yaml > "$work/demo.yaml"
$QEMU "$BIN" run -c "$work/demo.yaml" 2>"$work/log" &
pid=$!
# wait for the broker (up to 30 s under emulation), then for 5 readings
for _ in $(seq 300); do grep -q "fieldgate running" "$work/log" && break; sleep 0.1; done
got=$(timeout 30 mosquitto_sub -h 127.0.0.1 -p "$port" -t 'demo-gw/boiler/temperature' -C 5 -W 30)
echo "$got"
[ "$(echo "$got" | grep -c '"quality":"good"')" -eq 5 ] || { echo "ARM smoke: readings did not arrive"; cat "$work/log"; exit 1; }
kill -TERM $pid; wait $pid
echo "ARM smoke test passed: $BIN under qemu-aarch64 published readings and stopped cleanly"
