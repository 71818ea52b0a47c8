// heap_go_split allocates with a known split: bigSite allocates 3 bytes for every 1 byte that
// smallSite allocates (same object size, 3 calls for every 1), and keeps a known share of each
// site's objects live in fixed-size rings. It serves its own net/http/pprof on a loopback port
// and prints "port=N" on stdout once listening, so tests can compare against Go's own heap
// profile. Usage: heap_go_split [-rate R] [-size B] [-keep N] [-mb_per_sec M]
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"time"
)

var (
	bigRing   [][]byte
	smallRing [][]byte
	bigIdx    int
	smallIdx  int
)

// bigSite and smallSite are the two allocation sites; each keeps its newest objects live in its
// own ring (the ring length sets the live share).
//
//go:noinline
func bigSite(size int) {
	b := make([]byte, size)
	b[0] = 1
	bigRing[bigIdx%len(bigRing)] = b
	bigIdx++
}

//go:noinline
func smallSite(size int) {
	b := make([]byte, size)
	b[0] = 2
	smallRing[smallIdx%len(smallRing)] = b
	smallIdx++
}

func main() {
	rate := flag.Int("rate", 0, "runtime.MemProfileRate to set (0: keep Go's default; <0: set 0)")
	size := flag.Int("size", 8192, "object size in bytes at both sites")
	keep := flag.Int("keep", 256, "objects kept live per site (ring length)")
	perSec := flag.Int("mb_per_sec", 64, "MiB allocated per second (both sites together)")
	flag.Parse()
	if *rate > 0 {
		runtime.MemProfileRate = *rate
	} else if *rate < 0 {
		runtime.MemProfileRate = 0
	}
	bigRing = make([][]byte, *keep)
	smallRing = make([][]byte, *keep)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go http.Serve(ln, nil)
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)

	// Allocate in 10 ms slices at the requested rate.
	perTick := (*perSec << 20) / 100 / (4 * *size)
	if perTick < 1 {
		perTick = 1
	}
	tick := time.NewTicker(10 * time.Millisecond)
	for range tick.C {
		for i := 0; i < perTick; i++ {
			bigSite(*size)
			bigSite(*size)
			bigSite(*size)
			smallSite(*size)
		}
	}
}
