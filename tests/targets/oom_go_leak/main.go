// OOM test target: leaks heap in leakCacheEntry at a steady rate (first argument MiB/s,
// default 16) until the kernel OOM-kills it; transientWork allocates garbage alongside. Every
// byte leaked is written, so it is resident and charged to the memory cgroup. Prints "ready".
// It imports runtime/pprof, as a real controller does (else the linker turns heap profiling off).
package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

const chunk = 256 << 10

var kept [][]byte

//go:noinline
func leakCacheEntry() {
	b := make([]byte, chunk)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0xab
	}
	kept = append(kept, b)
}

var sink []byte

//go:noinline
func transientWork() {
	sink = make([]byte, 64<<10)
}

func main() {
	rate := 16.0
	if len(os.Args) > 1 {
		if v, err := strconv.ParseFloat(os.Args[1], 64); err == nil {
			rate = v
		}
	}
	if len(os.Args) > 2 && os.Args[2] == "dump" {
		// Reachable use of the heap profile: keeps the runtime's memory profiling on, as in any
		// program that imports net/http/pprof.
		pprof.Lookup("heap").WriteTo(os.Stdout, 1)
	}
	chunksPerSec := rate * (1 << 20) / chunk
	start := time.Now()
	fmt.Println("ready")
	done := 0.0
	for {
		t := time.Since(start).Seconds()
		for ; done < t*chunksPerSec; done++ {
			leakCacheEntry()
		}
		transientWork()
		time.Sleep(5 * time.Millisecond)
	}
}
