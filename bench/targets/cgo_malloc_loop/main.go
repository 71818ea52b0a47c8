// cgo_malloc_loop: the malloc loop of bench/targets/malloc_loop driven from Go through cgo, for
// the cost of native_heap's probes on a Go program's C allocations. Each iteration is one cgo
// call into C that mallocs 16..4111 bytes, writes it and frees the block allocated 64 iterations
// earlier. Commands on stdin, one per line:
//
//	run ITERS   prints "RESULT wall_ns cpu_ns checksum" (the loop only; cpu_ns: user+system
//	            time of the process, so in-process probe cost is included)
//	quit
//
// Prints "ready PID" first.
package main

/*
#include <stdint.h>
#include <stdlib.h>

static void *ring[64];
static uint64_t x = 88172645463325252ull;

__attribute__((noinline)) static uint64_t step(long i) {
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	unsigned char *p = malloc(16 + (x & 4095));
	p[0] = (unsigned char)x;
	free(ring[i & 63]);
	ring[i & 63] = p;
	return p[0];
}
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"syscall"
	"time"
)

func cpuNs() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

//go:noinline
func work(iters int64) uint64 {
	var sum uint64
	for i := int64(0); i < iters; i++ {
		sum += uint64(C.step(C.long(i)))
	}
	return sum
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var iters int64
		if _, err := fmt.Sscanf(in.Text(), "run %d", &iters); err == nil {
			w0, c0 := time.Now(), cpuNs()
			sum := work(iters)
			w1, c1 := time.Now(), cpuNs()
			fmt.Printf("RESULT %d %d %d\n", w1.Sub(w0).Nanoseconds(), c1-c0, sum)
		} else if in.Text() == "quit" {
			return
		}
	}
}
