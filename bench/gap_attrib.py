#!/usr/bin/env python3
"""Per-sample stolen time, attributed gap by gap (bench/run.sh section 1c).

Inputs: GAPS, the target's clock-loop gaps ("start_ns duration_ns", bench/targets/spin gaplog),
and TIMES, sampler_bench --times_out ("variant slice start_ns end_ns" and "variant time_ns" per
sample), both CLOCK_MONOTONIC, recorded over the same period with the target pinned to one CPU.

A sample is taken inside an interrupt of the target's thread, so its time lies inside one gap of
the loop. Per variant, the gaps that hold a sample are compared with the scheduler-tick gaps of
the same slices that hold none (ticks start on a fixed grid of CLOCK_MONOTONIC; the grid's period
is the one on which the sample times of the tick clock line up, else 4 ms):
  tick clock (variant names containing "tick"): it samples inside timer interrupts that happen
  anyway, so cost per sample = mean length of sampled gaps on the tick grid - mean of unsampled
  ones (samples taken in other timer interrupts, off the grid, are left out and counted);
  perf clock: its own interrupts; a sample gap off the tick grid costs its whole length, one on
  it its length minus the unsampled tick mean.
Both sides come from the same seconds, so the VM's drifting background (the spread that makes
the stolen-time totals noisy) cancels. Also printed: gaps per second and stolen % per variant
(the totals) for comparison.
"""
import collections
import statistics as st
import sys


def trimmed_mean(xs, cut=0.02):
    xs = sorted(xs)
    k = int(len(xs) * cut)
    xs = xs[: len(xs) - k] if k else xs
    return st.mean(xs) if xs else float("nan")


def main():
    gaps_f, times_f = sys.argv[1:3]
    gaps = []
    lo, hi = 0, 1 << 63
    for line in open(gaps_f):
        f = line.split()
        if f[0] == "range":
            lo, hi = int(f[1]), int(f[2])
            continue
        gaps.append((int(f[0]), int(f[1])))
    gaps.sort()
    slices = collections.defaultdict(list)
    samples = collections.defaultdict(list)
    for line in open(times_f):
        f = line.split()
        if len(f) == 4 and f[1] == "slice":
            # only the part of the slice the loop ran through
            a, b = max(int(f[2]), lo), min(int(f[3]), hi)
            if b > a:
                slices[f[0]].append((a, b))
        elif len(f) == 2 and lo <= int(f[1]) < hi:
            samples[f[0]].append(int(f[1]))
    if not gaps or not slices:
        print("gap attribution: no data")
        return

    # The tick grid: the period on which the tick variant's sample times line up best.
    def spread(period, ts):
        ph = sorted(t % period for t in ts)
        # circular: the smallest window holding half of the phases
        n = len(ph)
        k = max(1, int(n * 0.5))
        ext = ph + [p + period for p in ph]
        return min(ext[i + k - 1] - ext[i] for i in range(n)) / period

    tick_ts = samples.get("tick", [])
    period = 4_000_000
    if len(tick_ts) > 50:
        # The longest candidate period the samples line up on (a grid of 4 ms also lines up on
        # 2 ms and 1 ms), else the best one.
        cands = (10_000_000, 4_000_000, 3_333_333, 2_000_000, 1_000_000)
        tight = [p for p in cands if spread(p, tick_ts) < 0.05]
        period = tight[0] if tight else min(cands, key=lambda p: spread(p, tick_ts))
    # Tick gaps start within `window` after a grid point (interrupt entry latency).
    window = 100_000

    def on_grid(start):
        return (start % period) < window or (start % period) > period - 5_000

    starts = [g[0] for g in gaps]
    import bisect

    def gap_holding(t):
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and gaps[i][0] <= t <= gaps[i][0] + gaps[i][1]:
            return i
        return -1

    print(f"gap attribution (tick grid {period / 1e6:.3f} ms; trimmed means, top 2 % of gaps "
          "dropped):")
    print(f"  {'variant':10s} {'samples':>7s} {'in gap':>6s} {'gaps/s':>7s} {'stolen':>7s}"
          f" {'tick gap':>8s} {'sampled':>8s} {'us/sample':>9s} {'-> %':>7s}")
    for v, sl in slices.items():
        in_slice = [g for g in gaps if any(a <= g[0] < b for a, b in sl)]
        secs = sum(b - a for a, b in sl) / 1e9
        sampled_idx = set()
        found = 0
        for t in samples.get(v, []):
            i = gap_holding(t)
            if i >= 0:
                found += 1
                sampled_idx.add(i)
        unsampled_tick = [d for i, (s, d) in enumerate(gaps)
                          if i not in sampled_idx and on_grid(s) and any(a <= s < b for a, b in sl)]
        tick_mean = trimmed_mean(unsampled_tick) if unsampled_tick else 0.0
        costs = []
        off_grid = 0
        for i in sampled_idx:
            s, d = gaps[i]
            if on_grid(s):
                costs.append(d - tick_mean)
            elif "tick" in v:
                off_grid += 1
            else:
                costs.append(d)
        n = len(samples.get(v, []))
        per = trimmed_mean(costs) if costs else 0.0
        rate = n / secs if secs else 0.0
        stolen = sum(d for _, d in in_slice) / (secs * 1e9) * 100 if secs else 0.0
        sampled_mean = trimmed_mean([gaps[i][1] for i in sampled_idx
                                     if on_grid(gaps[i][0]) or "tick" not in v]) if sampled_idx else 0.0
        print(f"  {v:10s} {n:7d} {100 * found / n if n else 0:5.1f}% {len(in_slice) / secs:7.0f}"
              f" {stolen:6.3f}% {tick_mean / 1e3:7.1f}u {sampled_mean / 1e3:7.1f}u"
              f" {per / 1e3:9.1f} {per * rate / 1e9 * 100:+6.3f}%"
              + (f"  ({off_grid} samples off the tick grid left out)" if off_grid else ""))
    print("  (us/sample: what a sample adds to the target's thread; -> %: that at the variant's"
          " measured sample rate)")


if __name__ == "__main__":
    main()
