// unwind_cgo_callback: Go calls C, and C calls back into Go, where the CPU is spent (mixed
// Go -> cgo -> C -> Go stacks). hotCb gets 3 units of work for every 1 unit of coldCb.
// Usage: unwind_cgo_callback [-seconds S]
package main

/*
#include <stdint.h>
extern uint64_t hotCb(uint64_t);
extern uint64_t coldCb(uint64_t);

__attribute__((noinline)) static uint64_t c_dispatch(uint64_t x) {
	for (int i = 0; i < 3; i++) x = hotCb(x) + 1;
	return coldCb(x);
}
*/
import "C"

import (
	"flag"
	"os"
	"time"
)

func spin(y uint64, n int) uint64 {
	for i := 0; i < n; i++ {
		y ^= y << 13
		y ^= y >> 7
		y ^= y << 17
	}
	return y
}

//export hotCb
func hotCb(x C.uint64_t) C.uint64_t { return C.uint64_t(spin(uint64(x), 100000)) }

//export coldCb
func coldCb(x C.uint64_t) C.uint64_t { return C.uint64_t(spin(uint64(x)+1, 100000)) }

var sink uint64

//go:noinline
func viaC(x uint64) uint64 { return uint64(C.c_dispatch(C.uint64_t(x))) }

func main() {
	seconds := flag.Int("seconds", 0, "exit after this many seconds (0: run forever)")
	flag.Parse()
	if *seconds > 0 {
		time.AfterFunc(time.Duration(*seconds)*time.Second, func() { os.Exit(0) })
	}
	x := uint64(time.Now().UnixNano())
	for {
		x = viaC(x)
		sink += x
	}
}
