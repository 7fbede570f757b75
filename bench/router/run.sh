#!/usr/bin/env bash
# Steady-state HTTP through the Aegis router vs haproxy vs no proxy, side by side in one run.
#
# The same minimal backend (crates/router/examples/router_bench.rs, 12-byte body) is measured
# (a) directly, (b) through haproxy in `mode http`, (c) through an Aegis router port in front
# of an always-ready upstream. wrk drives each with the same settings; the three targets are
# interleaved over ROUNDS rounds and the median round per target is reported, because the
# 2 cores are shared with whatever else runs on the machine. Loopback only; every process is
# killed on exit and each measurement is bounded by DURATION.
#
#   bench/router/run.sh                 # DURATION=5s CONNS=16 THREADS=2 ROUNDS=3
#   DURATION=10s ROUNDS=5 bench/router/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
PROXY_THREADS=${PROXY_THREADS:-2}

for tool in wrk haproxy python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 1; }
done

cargo build --quiet --release -p aegis-router --example router_bench
BIN=target/release/examples/router_bench

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
BACKEND_PORT=$(free_port)
HAPROXY_PORT=$(free_port)
ROUTER_PORT=$(free_port)
ROUTER_MT_PORT=$(free_port)

BENCH_THREADS=1 BENCH_MAX_SECS=900 "$BIN" backend "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)

cat >"$TMP/haproxy.cfg" <<CFG
global
    nbthread $PROXY_THREADS
    maxconn 4096
defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend app
backend app
    server app1 127.0.0.1:$BACKEND_PORT
CFG
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)

BENCH_THREADS=$PROXY_THREADS BENCH_MAX_SECS=900 "$BIN" router "127.0.0.1:$ROUTER_PORT" "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)
BENCH_RT=multi-thread BENCH_THREADS=$PROXY_THREADS BENCH_MAX_SECS=900 "$BIN" router "127.0.0.1:$ROUTER_MT_PORT" "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)

TARGETS="direct haproxy router router_mt"
declare -A PORT=([direct]=$BACKEND_PORT [haproxy]=$HAPROXY_PORT [router]=$ROUTER_PORT [router_mt]=$ROUTER_MT_PORT)
# The process whose CPU time a request through each target costs (besides the backend's).
declare -A CPU_PID=([direct]=${PIDS[0]} [haproxy]=${PIDS[1]} [router]=${PIDS[2]} [router_mt]=${PIDS[3]})
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for name in $TARGETS; do
    for _ in $(seq 1 100); do
        curl -fs -o /dev/null "http://127.0.0.1:${PORT[$name]}/" && break
        sleep 0.1
    done
    curl -fs -o /dev/null "http://127.0.0.1:${PORT[$name]}/" || { echo "run.sh: $name is not answering" >&2; exit 1; }
    wrk -t"$THREADS" -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$name]}/" >/dev/null # warm-up
done

for round in $(seq 1 "$ROUNDS"); do
    for name in $TARGETS; do
        echo "round $round/$ROUNDS: $name" >&2
        before=$(cpu_ticks "${CPU_PID[$name]}")
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:${PORT[$name]}/" \
            >"$TMP/$name.$round.txt"
        echo "cpu_ticks $(( $(cpu_ticks "${CPU_PID[$name]}") - before ))" >>"$TMP/$name.$round.txt"
    done
done

DATE=$(date +%F)
OUT="bench/results/router-$DATE.md"
mkdir -p bench/results
python3 - "$TMP" "$ROUNDS" "$OUT" "$DURATION" "$CONNS" "$THREADS" "$PROXY_THREADS" <<'PY'
import re, statistics, subprocess, sys, platform, os
tmp, rounds, out, duration, conns, threads, proxy_threads = sys.argv[1:]
rounds = int(rounds)

def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", t, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    total = int(re.search(r"(\d+) requests in", t).group(1))
    ticks = int(re.search(r"cpu_ticks (\d+)", t).group(1))
    hz = os.sysconf("SC_CLK_TCK")
    return {"rps": rps, "p50": ms(lat["50"]), "p99": ms(lat["99"]),
            "errors": (int(errors.group(1)) if errors else 0),
            "cpu_us": ticks * 1e6 / hz / total}

res = {}
for name in ["direct", "haproxy", "router", "router_mt"]:
    runs = sorted((parse(f"{tmp}/{name}.{r}.txt") for r in range(1, rounds + 1)), key=lambda x: x["rps"])
    med = runs[len(runs) // 2]
    med["all"] = [round(r["rps"]) for r in runs]
    med["cpu_med"] = statistics.median(r["cpu_us"] for r in runs)
    res[name] = med

ratio = res["router"]["rps"] / res["haproxy"]["rps"]
cpu_ratio = res["router"]["cpu_med"] / res["haproxy"]["cpu_med"]
ratio_mt = res["router_mt"]["rps"] / res["haproxy"]["rps"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
def ver(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except Exception:
        return "?"
load = open("/proc/loadavg").read().split()[:3]

rows = ["| target | requests/s (median) | p50 latency | p99 latency | all rounds (req/s) | CPU per request (proxy, or backend if direct) | non-2xx |",
        "|---|---:|---:|---:|---|---:|---:|"]
for name, label in [("direct", "backend directly"), ("haproxy", "haproxy (mode http)"), ("router", "aegis router (http port, `Workers` thread-per-core)"), ("router_mt", "aegis router (http port, work-stealing runtime)")]:
    r = res[name]
    rows.append(f"| {label} | {r['rps']:.0f} | {r['p50']:.3f} ms | {r['p99']:.3f} ms | {', '.join(map(str, r['all']))} | {r['cpu_med']:.1f} us | {r['errors']} |")
table = "\n".join(rows)
verdict = "meets" if ratio >= 0.9 else "misses"
print(table)
print(f"\nrouter/haproxy throughput: {ratio:.2f} ({verdict} the 0.9 target); CPU per request router/haproxy: {cpu_ratio:.2f}; work-stealing router/haproxy throughput: {ratio_mt:.2f}")

md = f"""# Router steady state: direct vs haproxy vs Aegis router

Recorded by `bench/router/run.sh` ({rounds} interleaved rounds, median round per target shown).

- wrk `-t{threads} -c{conns} -d{duration} --latency`, loopback, keep-alive, 12-byte response body
- backend: `router_bench backend` (hyper HTTP/1.1, 1 worker thread)
- haproxy: `mode http`, `option forwardfor`, nbthread {proxy_threads}
- router: `router_bench router`, an `http` port, always-ready upstream over loopback TCP, connections served on `Workers` ({proxy_threads} threads, each a current-thread runtime; the recommended setup)
- router, work-stealing: the same served by a multi-thread tokio runtime with {proxy_threads} workers (`BENCH_RT=multi-thread`)
- machine: {os.cpu_count()} CPUs ({subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} usable), {cpu}, kernel {platform.release()}; load average at the end {' '.join(load)}
- {ver(['haproxy', '-v'])}; {ver(['wrk', '-v']) or 'wrk'}

{table}

**router/haproxy throughput: {ratio:.2f}** (target >= 0.9: {verdict}). CPU time per proxied
request, router/haproxy: {cpu_ratio:.2f}. Work-stealing runtime router/haproxy throughput: {ratio_mt:.2f}.

wrk, the backend and the proxy share the same 2 cores (and, on a shared machine, whatever else
runs), so throughput includes their competition for CPU; the CPU time per request of the proxy
process (utime + stime over the run / requests) is the steadier figure.
"""
open(out, "w").write(md)
print(f"recorded in {out}")
PY
