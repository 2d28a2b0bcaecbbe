#!/usr/bin/env bash
# 10-minute failure-storm soak: gwtrace (watch mode, JSON verdicts) under a storm of failing unix
# connects from the bench worker; samples the agent's RSS, CPU and locked BPF map memory every 30 s.
# Run as root after `cargo build --release -p probe-user && cargo build -p xtask`.
set -u
cd "$(dirname "$0")/.."
SECS=${SECS:-600}
OUT=${OUT:-bench/results/soak}
mkdir -p "$OUT"
GW=target/release/gwtrace
XT=target/debug/xtask
$GW --json --duration $((SECS + 20)) > /dev/null 2> "$OUT/gwtrace.err" &
GWPID=$!
sleep 2
( sleep 1; echo go ) | $XT bench-worker storm --secs "$SECS" --threads 2 > "$OUT/worker.out" 2>&1 &
WPID=$!
for i in $(seq 1 $((SECS / 30 + 1))); do
  sleep 30
  rss=$(awk '/VmRSS/{print $2}' /proc/$GWPID/status 2>/dev/null)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$GWPID/status 2>/dev/null)
  cpu=$(awk '{print $14+$15}' /proc/$GWPID/stat 2>/dev/null)
  mem=0
  for fd in /proc/$GWPID/fdinfo/*; do
    m=$(awk '/memlock/{print $2}' "$fd" 2>/dev/null); [ -n "$m" ] && mem=$((mem + m))
  done
  echo "t=$((i * 30))s rss_kb=$rss hwm_kb=$hwm cpu_ticks=$cpu bpf_memlock_bytes=$mem"
done
wait $WPID
wait $GWPID
echo "gwtrace exit $?"
tail -3 "$OUT/gwtrace.err"
cat "$OUT/worker.out"
