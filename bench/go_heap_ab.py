#!/usr/bin/env python3
"""What serving Go heap profiles costs an allocation-heavy Go target, measured inside one run.

Usage (root): go_heap_ab.py AGENT GOALLOC [--blocks N] [--phase S] [--rate R] [--same_cpu]

The target (bench/targets/goalloc -stream, GOMAXPROCS=1, pinned to the last CPU) allocates
without pause and reports its throughput for every 100 ms window of wall time. The agent
(pprof-sidecar --target_pid) runs for the whole run. Time is cut into blocks of three phases of
`--phase` seconds each, in random order per block:
  idle   the agent runs, nothing is requested;
  agent  GET the agent's /debug/pprof/heap R times per second;
  self   GET the target's own net/http/pprof /debug/pprof/heap R times per second (what the
         target would pay serving it itself, as a reference).
A phase's throughput is the target's iterations per second over the windows that lie wholly
inside it (the first 200 ms of each phase are left out). Each block gives agent/idle - 1 and
self/idle - 1 from phases a few seconds apart, so slow drifts of the machine cancel; the median
over blocks is the cost, with its interquartile range and a bootstrap 95 % interval.

The agent and this driver run on CPU 0, the target alone on the last CPU: the cost measured is
what the agent's reads take from the target itself (its memory and its mmap lock), not CPU time
the agent would take on a shared CPU. --same_cpu pins the agent to the target's CPU as well:
then its CPU time per request counts too (a saturated node).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu_ns(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // tick


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return len(r.read())


def bootstrap_ci(xs, n=2000, seed=1):
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choice(xs) for _ in xs) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("agent")
    ap.add_argument("goalloc")
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--phase", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=1.0, help="requests per second while serving")
    ap.add_argument("--same_cpu", action="store_true")
    ap.add_argument("--json", help="write per-block results here")
    a = ap.parse_args()

    ncpu = os.cpu_count()
    tcpu, acpu = str(ncpu - 1), "0"
    self_port, agent_port = free_port(), free_port()
    env = dict(os.environ, GOMAXPROCS="1")
    target = subprocess.Popen(
        ["taskset", "-c", tcpu, a.goalloc, "-stream", "-window_ms", "100", "-http",
         f"127.0.0.1:{self_port}"], stdout=subprocess.PIPE, text=True, env=env)
    first = target.stdout.readline().split()
    assert first[0] == "ready", first
    tpid = target.pid  # taskset execs the target: same pid
    windows = []

    def reader():
        for line in target.stdout:
            f = line.split()
            if len(f) == 5 and f[0] == "W":
                windows.append(tuple(int(x) for x in f[1:]))

    threading.Thread(target=reader, daemon=True).start()
    agent = subprocess.Popen(
        ["taskset", "-c", tcpu if a.same_cpu else acpu, a.agent, f"--target_pid={tpid}",
         f"--listen_address=127.0.0.1:{agent_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.sched_setaffinity(0, {0})
    urls = {"agent": f"http://127.0.0.1:{agent_port}/debug/pprof/heap",
            "self": f"http://127.0.0.1:{self_port}/debug/pprof/heap"}
    try:
        for _ in range(100):
            try:
                get(urls["agent"])
                get(urls["self"])
                break
            except Exception:
                time.sleep(0.1)
        else:
            sys.exit("go_heap_ab: the agent or the target does not serve /debug/pprof/heap")
        time.sleep(3)  # warm-up
        phases = []  # (mode, start_ns, end_ns, requests, agent_cpu_ns)
        rng = random.Random(42)
        for b in range(a.blocks):
            order = ["idle", "agent", "self"]
            rng.shuffle(order)
            for mode in order:
                t0 = time.monotonic_ns()
                end = t0 + int(a.phase * 1e9)
                c0 = proc_cpu_ns(agent.pid)
                n = 0
                while True:
                    now = time.monotonic_ns()
                    if now >= end:
                        break
                    if mode != "idle":
                        slot = t0 + int(n * 1e9 / a.rate)
                        if now >= slot:
                            get(urls[mode])
                            n += 1
                            continue
                        time.sleep(min(slot, end) / 1e9 - now / 1e9)
                    else:
                        time.sleep((end - now) / 1e9)
                phases.append((mode, b, t0, time.monotonic_ns(), n, proc_cpu_ns(agent.pid) - c0))
        time.sleep(0.3)
    finally:
        agent.terminate()
        agent.wait()
        target.kill()
        target.wait()

    guard = 200_000_000
    rate = {}
    for mode, b, t0, t1, n, acpu_ns in phases:
        iters = dur = 0
        for ws, we, it, _ in windows:
            if ws >= t0 + guard and we <= t1:
                iters += it
                dur += we - ws
        if dur > 0:
            rate[(b, mode)] = iters / dur * 1e9
    rel = {"agent": [], "self": []}
    for b in range(a.blocks):
        if (b, "idle") not in rate:
            continue
        for m in rel:
            if (b, m) in rate:
                rel[m].append(100 * (rate[(b, m)] / rate[(b, "idle")] - 1))
    reqs = sum(p[4] for p in phases if p[0] == "agent")
    agent_cpu = sum(p[5] for p in phases if p[0] == "agent")
    idle_cpu = sum(p[5] for p in phases if p[0] == "idle")
    idle_time = sum(p[3] - p[2] for p in phases if p[0] == "idle")
    agent_time = sum(p[3] - p[2] for p in phases if p[0] == "agent")
    idle_rates = [rate[(b, "idle")] for b in range(a.blocks) if (b, "idle") in rate]
    print(f"target: goalloc -stream, GOMAXPROCS=1 on CPU {tcpu}; agent on CPU "
          f"{tcpu if a.same_cpu else acpu}; {a.blocks} blocks x 3 phases x {a.phase:g} s; "
          f"{a.rate:g} requests/s while serving; {len(windows)} windows of 100 ms")
    print(f"idle throughput: median {statistics.median(idle_rates) / 1e6:.2f} M iterations/s, "
          f"block-to-block spread (IQR) "
          f"{statistics.quantiles(idle_rates, n=4)[0] / 1e6:.2f} .. "
          f"{statistics.quantiles(idle_rates, n=4)[2] / 1e6:.2f}")
    per_req_ms = ((agent_cpu - idle_cpu * agent_time / max(idle_time, 1)) / max(reqs, 1)) / 1e6
    print(f"agent CPU per heap request: {per_req_ms:.2f} ms ({reqs} requests)")
    out = {}
    for m, xs in rel.items():
        if len(xs) < 4:
            continue
        q = statistics.quantiles(xs, n=4)
        lo, hi = bootstrap_ci(xs)
        label = "agent /debug/pprof/heap" if m == "agent" else "target's own /debug/pprof/heap"
        print(f"{label:32s} throughput vs idle: median {statistics.median(xs):+.2f} % "
              f"[IQR {q[0]:+.2f} .. {q[2]:+.2f}; 95 % CI of the median {lo:+.2f} .. {hi:+.2f}]"
              f" over {len(xs)} blocks")
        out[m] = {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "ci": [lo, hi],
                  "blocks": xs}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
