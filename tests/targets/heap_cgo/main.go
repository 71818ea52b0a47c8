// heap_cgo: a cgo program whose C code allocates known amounts from distinct C functions called
// from distinct Go functions, for the C allocations (native_heap) of a Go target. main.bigGo
// calls C's c_big_fill, which mallocs 3 bytes for every byte c_small_fill callocs under
// main.smallGo; main.callbackGo calls C's c_outer, which calls back into Go (main.goAlloc, then
// main.cbInner), which calls C's c_cb_fill (malloc, 2 bytes for every 3 of c_big_fill). Each
// site keeps every other block live and frees the others at once. The C code (heap_cgo.c) is
// built without frame pointers. Usage: heap_cgo [-n N]. Prints "ready PID" first; on each
// SIGUSR1, allocates N blocks at each site and prints "done big_alloc big_live small_alloc
// small_live cb_alloc cb_live" (bytes since the start, as counted by the C code).
package main

/*
#cgo CFLAGS: -O2 -fomit-frame-pointer
void c_big_fill(int n);
void c_small_fill(int n);
void c_cb_fill(int n);
void c_outer(int n);
unsigned long long c_count(int i);
*/
import "C"

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

//go:noinline
func bigGo(n int) { C.c_big_fill(C.int(n)) }

//go:noinline
func smallGo(n int) { C.c_small_fill(C.int(n)) }

//export goAlloc
func goAlloc(n C.int) { cbInner(int(n)) }

//go:noinline
func cbInner(n int) { C.c_cb_fill(C.int(n)) }

//go:noinline
func callbackGo(n int) { C.c_outer(C.int(n)) }

//go:noinline
func serve(n int) {
	bigGo(n)
	smallGo(n)
	callbackGo(n)
}

func main() {
	// A reference to runtime.MemProfile keeps the Go heap profile on (the linker turns it off in
	// binaries that cannot read it), as net/http/pprof does in a controller.
	runtime.MemProfile(nil, false)
	n := flag.Int("n", 49152, "blocks per site per SIGUSR1")
	flag.Parse()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	fmt.Printf("ready %d\n", os.Getpid())
	for range usr1 {
		serve(*n)
		fmt.Printf("done %d %d %d %d %d %d\n", C.c_count(0), C.c_count(1), C.c_count(2),
			C.c_count(3), C.c_count(4), C.c_count(5))
	}
}
