// heap_cgo: a cgo program whose C code allocates known amounts from distinct C functions called
// from distinct Go functions, for the C allocations (native_heap) of a Go target. main.bigGo
// calls C's c_big_fill, which mallocs 3 bytes for every byte c_small_fill callocs under
// main.smallGo; each keeps every other block live and frees the others at once. The C code is
// built without frame pointers. Usage: heap_cgo [-n N]. Prints "ready PID" first; on each
// SIGUSR1, allocates N blocks at each site and prints "done big_alloc small_alloc big_live
// small_live" (bytes since the start, as counted by the C code).
package main

/*
#cgo CFLAGS: -O2 -fomit-frame-pointer
#include <stdlib.h>
#include <string.h>

#define MAX_KEPT (1 << 20)
static void *kept[MAX_KEPT];
static size_t nkept;
static unsigned long long big_alloc, small_alloc, big_live, small_live;

static int keep(void *p) {
	if (nkept == MAX_KEPT) return 0;
	kept[nkept++] = p;
	return 1;
}

__attribute__((noinline)) static void c_big_fill(int n) {
	for (int i = 0; i < n; i++) {
		char *p = malloc(3072);
		if (p == NULL) continue;
		p[0] = 1;
		big_alloc += 3072;
		if ((i & 1) == 0 && keep(p)) {
			big_live += 3072;
		} else {
			free(p);
		}
	}
}

__attribute__((noinline)) static void c_small_fill(int n) {
	for (int i = 0; i < n; i++) {
		char *p = calloc(1, 1024);
		if (p == NULL) continue;
		small_alloc += 1024;
		if ((i & 1) == 0 && keep(p)) {
			small_live += 1024;
		} else {
			free(p);
		}
	}
}

static unsigned long long c_count(int i) {
	switch (i) {
	case 0: return big_alloc;
	case 1: return small_alloc;
	case 2: return big_live;
	default: return small_live;
	}
}
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

//go:noinline
func serve(n int) {
	bigGo(n)
	smallGo(n)
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
		fmt.Printf("done %d %d %d %d\n", C.c_count(0), C.c_count(1), C.c_count(2), C.c_count(3))
	}
}
