#!/usr/bin/env python3
"""Two agent builds side by side on the same Go target, interleaved in one run.

Usage (root): agent_ab.py OLD_AGENT NEW_AGENT GOALLOC [--rounds N] [--heap_reqs N] [--cpu_s S]

For a change that should not move the agent's costs (a refactor), this prints both builds'
numbers and the new/old ratios, measured in the same rounds so that the machine's load affects
both alike. The target is bench/targets/goalloc -stream (allocating without pause, so the heap
profile has records and the CPU profile has samples), pinned to the last CPU; each agent runs
pinned to CPU 0, one at a time, with its defaults (perf clock where the tick cannot run is not
forced). Each round starts each agent afresh in random order and measures:
  heap_cpu_ms     the agent's CPU time (its threads' schedstat) per /debug/pprof/heap request
  heap_ms         wall time of a heap request
  cpu_extra_ms    wall time of /debug/pprof/profile?seconds=S beyond S
  cpu_agent_ms    the agent's CPU time over that CPU profile request
  rss_mb          the agent's VmRSS after the requests; hwm_mb its VmHWM
  bpf_ns_kept     BPF run time of the agent's programs over the CPU profile window (with
                  kernel.bpf_stats_enabled, set for the run and restored) per sample written into
                  the profile (pprof_sidecar_profile_samples_total); bpf_ns_run per invocation
Medians over rounds, then new/old.
"""
import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request



def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_ms(pid):
    """CPU time of all the process's live threads, from schedstat (ns resolution)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # the thread exited
    return total / 1e6


def mem_mb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
    return out["VmRSS"], out["VmHWM"]


def bpf_stats(pid):
    """Sum of run_time_ns and run_cnt over the BPF programs the process holds (fdinfo)."""
    ns = cnt = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except OSError:
            continue
        if "prog_type" in info and "run_time_ns" in info:
            ns += int(info["run_time_ns"])
            cnt += int(info["run_cnt"])
    return ns, cnt


def metric(base, name):
    _, body = get(base + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def get(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def run_agent(binary, target_pid, args):
    port = free_port()
    ncpu = os.cpu_count()
    agent = subprocess.Popen(
        ["taskset", "-c", "0", binary, f"--target_pid={target_pid}",
         f"--listen_address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            st, body = get(base + "/healthz", 2)
            if b"target: pid" in body:
                break
        except Exception:
            pass
        time.sleep(0.1)
    else:
        agent.kill()
        raise RuntimeError(f"{binary}: not ready")
    m = {}
    get(base + "/debug/pprof/heap")  # first read: locating the runtime's variables
    c0, t0 = cpu_ms(agent.pid), time.time()
    for _ in range(args.heap_reqs):
        get(base + "/debug/pprof/heap")
    m["heap_cpu_ms"] = (cpu_ms(agent.pid) - c0) / args.heap_reqs
    m["heap_ms"] = (time.time() - t0) * 1000 / args.heap_reqs
    s0 = metric(base, "pprof_sidecar_profile_samples_total")
    b0 = bpf_stats(agent.pid)
    c0, t0 = cpu_ms(agent.pid), time.time()
    st, body = get(f"{base}/debug/pprof/profile?seconds={args.cpu_s}", args.cpu_s + 60)
    m["cpu_extra_ms"] = (time.time() - t0 - args.cpu_s) * 1000
    m["cpu_agent_ms"] = cpu_ms(agent.pid) - c0
    b1 = bpf_stats(agent.pid)
    kept = metric(base, "pprof_sidecar_profile_samples_total") - s0
    m["bpf_ns_kept"] = (b1[0] - b0[0]) / kept if kept else float("nan")
    m["bpf_ns_run"] = (b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else float("nan")
    m["rss_mb"], m["hwm_mb"] = mem_mb(agent.pid)
    agent.terminate()
    agent.wait(timeout=30)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("goalloc")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--heap_reqs", type=int, default=50)
    ap.add_argument("--cpu_s", type=int, default=3)
    args = ap.parse_args()
    ncpu = os.cpu_count()
    target = subprocess.Popen(
        ["taskset", "-c", str(ncpu - 1), args.goalloc, "-stream", "-window_ms", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, GOMAXPROCS="1"))
    time.sleep(1)
    results = {"old": [], "new": []}
    stats_path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(stats_path) as f:
        stats_was = f.read().strip()
    with open(stats_path, "w") as f:
        f.write("1")
    try:
        for r in range(args.rounds):
            order = ["old", "new"]
            random.shuffle(order)
            for which in order:
                results[which].append(run_agent(getattr(args, which), target.pid, args))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        target.kill()
        with open(stats_path, "w") as f:
            f.write(stats_was)
    keys = list(results["old"][0].keys())
    print(f"{'metric':<14} {'old':>10} {'new':>10} {'new/old':>8}   (medians of {args.rounds} rounds)")
    for k in keys:
        o = statistics.median(m[k] for m in results["old"])
        n = statistics.median(m[k] for m in results["new"])
        ratio = n / o if o else float("nan")
        print(f"{k:<14} {o:>10.2f} {n:>10.2f} {ratio:>8.2f}")


if __name__ == "__main__":
    main()
