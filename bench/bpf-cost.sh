#!/bin/sh
# Per-program BPF cost under a bounded nginx load (bench/README.md, "What the programs cost").
# Usage (root): bench/bpf-cost.sh GWTRACE_BINARY [HOOKS] [SECS] [KEEPALIVE]
# nginx (one worker) proxies /tcp to a second server block of itself over TCP, wrk -t1 -c8
# drives it for SECS seconds while gwtrace --hooks HOOKS runs; with KEEPALIVE=1 the upstream
# connections are kept alive (upstream keepalive 8, HTTP/1.1). Prints run_cnt, run_time_ns and
# ns per run per gwtrace program, the requests wrk made, and BPF ns per request.
set -eu
BIN=$1; HOOKS=${2:-sock}; SECS=${3:-8}; KA=${4:-0}
D=$(mktemp -d /tmp/gwcost.XXXXXX)
PORT=$((20000 + $$ % 10000)); UP=$((PORT + 1))
if [ "$KA" = 1 ]; then
  UPS="upstream up { server 127.0.0.1:$UP; keepalive 8; }"
  LOC="location /tcp { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
else
  UPS=""; LOC="location /tcp { proxy_pass http://127.0.0.1:$UP; }"
fi
mkdir -p "$D/tmp"
cat > "$D/nginx.conf" <<CONF
daemon off; master_process on; worker_processes 1; user root; pid $D/nginx.pid;
error_log $D/error.log error; events { worker_connections 1024; }
http { access_log off; client_body_temp_path $D/tmp/b; proxy_temp_path $D/tmp/p;
  fastcgi_temp_path $D/tmp/f; uwsgi_temp_path $D/tmp/u; scgi_temp_path $D/tmp/s;
  $UPS
  server { listen 127.0.0.1:$PORT; $LOC }
  server { listen 127.0.0.1:$UP; location / { return 200 "ok"; } } }
CONF
sysctl -q kernel.bpf_stats_enabled=1
nginx -c "$D/nginx.conf" -e "$D/error.log" & NG=$!
"$BIN" --hooks "$HOOKS" --duration $((SECS + 6)) > "$D/gw.out" 2> "$D/gw.err" & GW=$!
sleep 3
# Only the programs this gwtrace holds (other tracers on the host have the same names): the
# prog_id lines of its fds' fdinfo.
snap() {
  ids=$(cat /proc/"$GW"/fdinfo/* 2>/dev/null | awk '/^prog_id:/ {print $2}' | sort -u | tr '\n' ' ')
  bpftool prog show -j | python3 -c '
import json,sys
ids = set(int(i) for i in sys.argv[1].split())
for p in json.load(sys.stdin):
    if p["id"] in ids:
        print(p["id"], p["name"], p.get("run_cnt", 0), p.get("run_time_ns", 0))' "$ids"; }
snap > "$D/before"
wrk -t1 -c8 -d"${SECS}s" "http://127.0.0.1:$PORT/tcp" > "$D/wrk" 2>&1
snap > "$D/after"
REQS=$(awk '/requests in/ {print $1}' "$D/wrk")
kill "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true
kill -QUIT "$NG" 2>/dev/null || true; wait "$NG" 2>/dev/null || true
python3 - "$D/before" "$D/after" "$REQS" "$D/gw.err" <<'PY'
import sys
b = {l.split()[0]: l.split() for l in open(sys.argv[1])}
a = {l.split()[0]: l.split() for l in open(sys.argv[2])}
reqs = int(sys.argv[3]); total = 0
mine = set(l.split()[1] for l in open(sys.argv[2]))
print(f"{'program':<26}{'runs':>10}{'ns/run':>9}{'runs/req':>9}{'ns/req':>9}")
for pid, (i, name, cnt, ns) in sorted(a.items(), key=lambda x: x[1][1]):
    if pid not in b: continue
    dc = int(cnt) - int(b[pid][2]); dn = int(ns) - int(b[pid][3])
    if dc == 0: continue
    total += dn
    print(f"{name:<26}{dc:>10}{dn/dc:>9.0f}{dc/reqs:>9.2f}{dn/reqs:>9.0f}")
print(f"requests {reqs}; BPF ns per request (every program above) {total/reqs:.0f}")
PY
grep -h "Requests/sec" "$D/wrk"
rm -rf "$D"
