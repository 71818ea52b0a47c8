// goalloc is bench/heap_bench.sh's allocation-heavy Go target: a fixed amount of allocation
// work (small and medium objects, a slowly rotating live set), repeated on command, timing
// itself. Go's own heap profiler runs at its default MemProfileRate (512 KiB), as always.
//
// Commands on stdin, one per line: "run ITERS" -> "RESULT wall_ns cpu_ns checksum";
// "records" -> "RECORDS n" (heap profile records, from runtime.MemProfile); "quit".
//
// With -stream it instead works without pause and prints, for every window of -window_ms of wall
// time, "W start_ns end_ns iters cpu_ns" (CLOCK_MONOTONIC, the clock of Python's
// time.monotonic_ns(); cpu_ns: the process's CPU time in the window), for bench/go_heap_ab.py.
// -http ADDR serves net/http/pprof (the target's own /debug/pprof/heap) from the same process.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

type node struct {
	next *node
	val  [6]uint64
}

var live [4096][]byte

//go:noinline
func allocSmall(i int) *node { return &node{val: [6]uint64{uint64(i)}} }

//go:noinline
func allocBuf(n int) []byte { return make([]byte, n) }

func work(iters int) uint64 {
	var sum uint64
	var head *node
	for i := 0; i < iters; i++ {
		n := allocSmall(i)
		n.next = head
		if i%64 == 0 {
			head = nil
		} else {
			head = n
		}
		b := allocBuf(64 + i%2048)
		b[0] = byte(i)
		sum += uint64(b[0]) + n.val[0]
		if i%16 == 0 {
			live[i/16%len(live)] = b
		}
	}
	return sum
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func monoNanos() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// stream works in chunks of 256 iterations and reports each window of wall time.
func stream(window time.Duration) {
	out := bufio.NewWriter(os.Stdout)
	var sum uint64
	for {
		start, c0 := monoNanos(), cpuNanos()
		deadline := time.Now().Add(window)
		iters := 0
		for time.Now().Before(deadline) {
			sum += work(256)
			iters += 256
		}
		fmt.Fprintf(out, "W %d %d %d %d\n", start, monoNanos(), iters, cpuNanos()-c0)
		out.Flush()
	}
}

func main() {
	streamMode := flag.Bool("stream", false, "work without pause, report every window")
	windowMs := flag.Int("window_ms", 100, "window length with -stream")
	httpAddr := flag.String("http", "", "serve net/http/pprof on this address")
	flag.Parse()
	if *httpAddr != "" {
		go func() { fmt.Fprintln(os.Stderr, http.ListenAndServe(*httpAddr, nil)) }()
	}
	fmt.Printf("ready %d\n", os.Getpid())
	if *streamMode {
		stream(time.Duration(*windowMs) * time.Millisecond)
		return
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 2 && f[0] == "run" {
			iters, _ := strconv.Atoi(f[1])
			w0, c0 := time.Now(), cpuNanos()
			sum := work(iters)
			fmt.Printf("RESULT %d %d %d\n", time.Since(w0).Nanoseconds(), cpuNanos()-c0, sum)
		} else if len(f) == 1 && f[0] == "records" {
			// Also keeps heap profiling on: the linker sets MemProfileRate to 0 in programs
			// from which runtime.MemProfile is unreachable (net/http/pprof users reach it).
			n, _ := runtime.MemProfile(nil, true)
			fmt.Printf("RECORDS %d\n", n)
		} else if len(f) == 1 && f[0] == "quit" {
			return
		}
	}
}
