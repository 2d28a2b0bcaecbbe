#!/usr/bin/env bash
# 10-minute failure storm soak: gwtrace (watch mode, JSON verdicts) under a storm of failing unix connects.
set -u
GW=/work/main/target/release/gwtrace
XT=/work/main/target/debug/xtask
$GW --json --duration 620 > /dev/null 2> /work/soak.gw.err &
GWPID=$!
sleep 2
( sleep 1; echo go ) | $XT bench-worker storm --secs 600 --threads 2 > /work/soak.worker.out 2>&1 &
WPID=$!
for i in $(seq 1 21); do
  sleep 30
  rss=$(awk '/VmRSS/{print $2}' /proc/$GWPID/status 2>/dev/null)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$GWPID/status 2>/dev/null)
  cpu=$(awk '{print $14+$15}' /proc/$GWPID/stat 2>/dev/null)
  mem=$(for fd in /proc/$GWPID/fdinfo/*; do awk '/memlock/{print $2}' $fd; done 2>/dev/null | paste -sd+ | bc)
  echo "t=$((i*30))s rss_kb=$rss hwm_kb=$hwm cpu_ticks=$cpu bpf_memlock_bytes=$mem"
done
wait $WPID
wait $GWPID
echo "gwtrace exit $?"
