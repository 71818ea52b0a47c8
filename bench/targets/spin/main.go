// spin is the benchmark's CPU-bound target: a fixed amount of deterministic work, repeated on
// command, timing itself.
//
// It reads commands from stdin, one per line, and answers each on stdout:
//
//	run MODE ITERS   -> "RESULT MODE wall_ns cpu_ns checksum"
//	stolen MODE MS   -> "RESULT MODE wall_ns stolen_ns gaps short_ns short_gaps" (see stolen)
//	gaplog MS PATH   -> "RESULT gaplog wall_ns gaps": the clock loop of stolen for MS ms, every
//	                    gap written to PATH as "start_ns duration_ns" after a line "range
//	                    START_NS END_NS" (CLOCK_MONOTONIC, the clock of BPF's sample times;
//	                    bench/gap_attrib.py)
//	quit             -> exits
//
// MODE "base" runs the work as is; MODE "gopprof" wraps it in runtime/pprof's
// StartCPUProfile/StopCPUProfile at 100 Hz (Go's own profiler, as net/http/pprof would run it),
// writing the profile to -gopprof_out. Timing covers the work loop only: for "gopprof" the
// profiler is started before the clock starts and stopped after it stops, exactly as the agent's
// window covers the whole run. cpu_ns is the process's user+system time (getrusage RUSAGE_SELF)
// over the same interval, so it includes the Go profiler's own writer goroutine.
//
// The work is a mix of integer hashing, a small sort and map updates over a few call levels so
// that stacks look like a real program's (several frames deep, some inlining); it allocates
// nothing in steady state, so GC does not add noise.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "unsafe" // go:linkname
)

// CLOCK_MONOTONIC in ns (time.Now's monotonic reading is relative to process start).
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

var gopprofOut = flag.String("gopprof_out", os.DevNull, "where mode gopprof writes its profile")

type state struct {
	buf [256]uint64
	tab map[uint64]uint64
}

//go:noinline
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

//go:noinline
func fill(s *state, seed uint64) {
	for i := range s.buf {
		seed = mix(seed + uint64(i))
		s.buf[i] = seed
	}
}

//go:noinline
func insertionSort(a []uint64) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i - 1
		for j >= 0 && a[j] > v {
			a[j+1] = a[j]
			j--
		}
		a[j+1] = v
	}
}

//go:noinline
func tally(s *state) uint64 {
	var acc uint64
	for i := 0; i < len(s.buf); i += 16 {
		k := s.buf[i] & 1023
		s.tab[k] += s.buf[i+1]
		acc += s.tab[k]
	}
	return acc
}

//go:noinline
func step(s *state, i uint64) uint64 {
	fill(s, i)
	insertionSort(s.buf[:64])
	return tally(s) ^ s.buf[0]
}

func work(iters int) uint64 {
	s := &state{tab: make(map[uint64]uint64, 1024)}
	for k := uint64(0); k < 1024; k++ {
		s.tab[k] = k
	}
	var sum uint64
	for i := 0; i < iters; i++ {
		sum += step(s, uint64(i))
	}
	return sum
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// withProfiler runs measure under MODE: "base" as is, "gopprof" inside runtime/pprof's
// StartCPUProfile/StopCPUProfile (started before and stopped after the measurement).
func withProfiler(mode string, measure func()) error {
	if mode == "base" {
		measure()
		return nil
	}
	if mode != "gopprof" {
		return fmt.Errorf("unknown mode %q", mode)
	}
	f, err := os.Create(*gopprofOut)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	measure()
	pprof.StopCPUProfile()
	return nil
}

func run(mode string, iters int) (string, error) {
	var wall, cpu int64
	var sum uint64
	err := withProfiler(mode, func() {
		c0, t0 := cpuNanos(), time.Now()
		sum = work(iters)
		wall, cpu = time.Since(t0).Nanoseconds(), cpuNanos()-c0
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("RESULT %s %d %d %x", mode, wall, cpu, sum), nil
}

// A gap between two consecutive clock reads longer than this is time taken from the loop (one
// iteration takes ~20-50 ns).
const gapThreshold = 500 * time.Nanosecond

// Gaps up to this long are "short": an interrupt and what runs in it (a profiler's sample costs
// tens of microseconds at most). Longer ones are the vCPU or the thread being descheduled, which
// no profiler here causes (they are pinned to another CPU) and which dominate the spread of
// the total on a shared VM.
const shortGapMax = time.Millisecond

// stolen reads the monotonic clock in a tight loop for ms milliseconds and sums the gaps: the
// time this thread did not run its own code (interrupts and what runs in them — a sampling
// profiler's perf interrupt and BPF program, Go's SIGPROF handler —, preemption, the
// hypervisor). Unlike timing fixed work, it is not blurred by how fast the work itself ran.
func stolen(mode string, ms int) (string, error) {
	var wall, took, gaps, short, shortGaps int64
	err := withProfiler(mode, func() {
		start := time.Now()
		end := start.Add(time.Duration(ms) * time.Millisecond)
		last := start
		for {
			now := time.Now()
			if d := now.Sub(last); d > gapThreshold {
				took += int64(d)
				gaps++
				if d <= shortGapMax {
					short += int64(d)
					shortGaps++
				}
			}
			last = now
			if now.After(end) {
				break
			}
		}
		wall = last.Sub(start).Nanoseconds()
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("RESULT %s %d %d %d %d %d", mode, wall, took, gaps, short, shortGaps), nil
}

// gaplog is stolen's loop that keeps every gap.
func gaplog(ms int, path string) (string, error) {
	starts := make([]int64, 0, 1<<20)
	durs := make([]int64, 0, 1<<20)
	start := nanotime()
	end := start + int64(ms)*1e6
	last := start
	for {
		now := nanotime()
		if d := now - last; d > int64(gapThreshold) && len(starts) < cap(starts) {
			starts = append(starts, last)
			durs = append(durs, d)
		}
		last = now
		if now > end {
			break
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "range %d %d\n", start, last)
	for i := range starts {
		fmt.Fprintf(w, "%d %d\n", starts[i], durs[i])
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return fmt.Sprintf("RESULT gaplog %d %d", last-start, len(starts)), nil
}

func main() {
	flag.Parse()
	if flag.NArg() > 1<<20 {
		// Never runs: keeps runtime.MemProfile reachable, or the linker turns heap profiling off
		// (MemProfileRate 0) and bench/heap_bench.sh's section 4 has no heap to read.
		runtime.MemProfile(nil, false)
	}
	fmt.Printf("READY %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return
		}
		if f[0] == "gaplog" && len(f) == 3 {
			ms, err := strconv.Atoi(f[1])
			if err != nil || ms <= 0 {
				fmt.Printf("ERROR bad ms %q\n", f[1])
				continue
			}
			line, err := gaplog(ms, f[2])
			if err != nil {
				fmt.Printf("ERROR %v\n", err)
				continue
			}
			fmt.Println(line)
			continue
		}
		if (f[0] != "run" && f[0] != "stolen") || len(f) != 3 {
			fmt.Printf("ERROR bad command %q\n", in.Text())
			continue
		}
		n, err := strconv.Atoi(f[2])
		if err != nil || n <= 0 {
			fmt.Printf("ERROR bad count %q\n", f[2])
			continue
		}
		var line string
		if f[0] == "run" {
			line, err = run(f[1], n)
		} else {
			line, err = stolen(f[1], n)
		}
		if err != nil {
			fmt.Printf("ERROR %v\n", err)
			continue
		}
		fmt.Println(line)
	}
}
