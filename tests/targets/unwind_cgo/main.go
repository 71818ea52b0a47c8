// unwind_cgo calls into C through cgo with a known split: hotGo's C call does 3 units of work for
// every 1 unit of coldGo's, in a C leaf reached through a C caller (mixed Go -> cgo -> C stacks).
// Usage: unwind_cgo [-seconds S]
package main

/*
#include <stdint.h>

__attribute__((noinline)) static uint64_t c_mix(uint64_t x, int rounds) {
	volatile uint64_t scratch[4];
	for (int i = 0; i < rounds; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		scratch[i & 3] = x;
	}
	return x + scratch[1];
}

__attribute__((noinline)) static uint64_t c_work(uint64_t x, int units) {
	return c_mix(x, units * 300000) + 1;
}
*/
import "C"

import (
	"flag"
	"os"
	"time"
)

var sink uint64

//go:noinline
func hotGo(x uint64) uint64 { return uint64(C.c_work(C.uint64_t(x), 3)) }

//go:noinline
func coldGo(x uint64) uint64 { return uint64(C.c_work(C.uint64_t(x+1), 1)) }

func main() {
	seconds := flag.Int("seconds", 0, "exit after this many seconds (0: run forever)")
	flag.Parse()
	if *seconds > 0 {
		time.AfterFunc(time.Duration(*seconds)*time.Second, func() { os.Exit(0) })
	}
	x := uint64(time.Now().UnixNano())
	for {
		x = hotGo(x)
		x = coldGo(x)
		sink += x
	}
}
