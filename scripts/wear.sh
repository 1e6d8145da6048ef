#!/bin/sh
# Bytes written to the storage device per reading by the real binary, with
# the uplink up: 10 simulated devices forwarding every reading at QoS 1 to a
# real mosquitto, `write_bytes` from /proc/PID/io over a steady window, the
# readings counted as they arrive upstream (mosquitto_sub), fsyncs counted
# with `strace -c -f` when strace is present.
#
# usage: scripts/wear.sh BINARY RATE [SECS] [BUFFER_YAML]
#   RATE        readings per second in all, about: 10, 100 or 1000 (the
#               devices' polls are up to 12 % apart, so they drift out of step)
#   SECS        the measured window (default 20), after 5 s of warm-up
#   BUFFER_YAML extra keys for `uplink.buffer`, e.g. "commit_window: 0s"
# prints one line: rate, readings, bytes/reading, fsyncs/s
set -eu
BIN=$1
RATE=$2
SECS=${3:-20}
BUFFER=${4:-}
case $RATE in
  10) POINTS=1; POLL=1000 ;;
  100) POINTS=10; POLL=1000 ;;
  1000) POINTS=10; POLL=100 ;;
  *) echo "RATE must be 10, 100 or 1000" >&2; exit 2 ;;
esac
# not tmpfs: the block layer must see the writes
DIR=$(mktemp -d "${WEAR_DIR:-/var/tmp}/wear.XXXXXX")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); LOCAL=$(port); HTTP=$(port)
cleanup() {
  for p in ${GW:-} ${SUB:-} ${MOSQ:-} ${TRACE:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$UP" >"$DIR/mosq.conf"
mosquitto -c "$DIR/mosq.conf" >"$DIR/mosq.log" 2>&1 &
MOSQ=$!
{
  printf 'gateway: { id: gw1, data_dir: "%s/data" }\n' "$DIR"
  printf 'broker: { listen: "127.0.0.1:%s" }\n' "$LOCAL"
  printf 'metrics: { listen: "127.0.0.1:%s" }\n' "$HTTP"
  printf 'devices:\n'
  d=0
  while [ $d -lt 10 ]; do
    # polls a little apart, so the devices drift out of step as real ones do
    printf '  - name: d%s\n    kind: simulated\n    poll: %sms\n    points:\n' "$d" $((POLL + POLL * d * 13 / 1000))
    p=0
    while [ $p -lt $POINTS ]; do
      printf '      - { name: p%s, signal: counter }\n' "$p"
      p=$((p + 1))
    done
    d=$((d + 1))
  done
  printf 'rules: { qos: 1 }\n'
  printf 'uplink:\n  url: mqtt://127.0.0.1:%s\n' "$UP"
  printf '  forward: [{ filter: "gw1/#", prefix: "site/", qos: 1 }]\n'
  [ -n "$BUFFER" ] && printf '  buffer: { %s }\n' "$BUFFER"
  true
} >"$DIR/gw.yaml"
sleep 0.3
mosquitto_sub -p "$UP" -q 1 -t 'site/gw1/+/+' >"$DIR/up.txt" &
SUB=$!
RUST_LOG=warn "$BIN" run -c "$DIR/gw.yaml" >"$DIR/gw.log" 2>&1 &
GW=$!
sleep 5
wb() { awk '/^write_bytes/ {print $2}' "/proc/$GW/io"; }
if command -v strace >/dev/null; then
  # every thread of the gateway (SQLite syncs from a worker thread)
  strace -c -f -e trace=fsync,fdatasync -o "$DIR/strace.txt" \
    $(for t in /proc/$GW/task/*; do printf -- '-p %s ' "${t##*/}"; done) 2>/dev/null &
  TRACE=$!
  sleep 0.5
fi
W0=$(wb); N0=$(wc -l <"$DIR/up.txt")
sleep "$SECS"
W1=$(wb); N1=$(wc -l <"$DIR/up.txt")
FS=n/a
if [ -n "${TRACE:-}" ]; then
  kill -INT "$TRACE"; wait "$TRACE" 2>/dev/null || true; TRACE=
  FS=$(awk '$NF=="fsync"||$NF=="fdatasync" {s+=$4} END {printf "%.1f", s/'"$SECS"'}' "$DIR/strace.txt")
fi
N=$((N1 - N0))
[ "$N" -gt 0 ] || { echo "no readings arrived upstream"; cat "$DIR/gw.log"; exit 1; }
echo "rate=$RATE readings=$N bytes/reading=$(( (W1 - W0) / N )) fsyncs/s=$FS buffer={${BUFFER}}"
