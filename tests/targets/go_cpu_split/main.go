// go_cpu_split burns CPU in two functions with a known split: hotPath gets 3 units of work for
// every 1 unit of coldPath, on as many goroutines as requested. It is the demo target and the
// reference target of the end-to-end tests. Usage: go_cpu_split [-goroutines N] [-seconds S] [-hash]
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"time"
)

var sink uint64

// hotPath and coldPath each run their own loop (no shared callee), so the 3:1 split is visible
// at the leaf: a flat profile attributes the work to hotPath and coldPath themselves.
//
//go:noinline
func hotPath(x uint64) uint64 {
	for i := 0; i < 3*20000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func coldPath(x uint64) uint64 {
	x++
	for i := 0; i < 20000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// hashWork exercises Go assembly (crypto/sha256 block functions do not keep frame pointers).
//
//go:noinline
func hashWork(buf []byte) byte {
	s := sha256.Sum256(buf)
	return s[0]
}

func worker(withHash bool) {
	x := uint64(time.Now().UnixNano())
	buf := make([]byte, 64<<10)
	for {
		x = hotPath(x)
		x = coldPath(x)
		if withHash {
			buf[0] = hashWork(buf)
		}
		sink += x
	}
}

func main() {
	goroutines := flag.Int("goroutines", 1, "busy goroutines")
	seconds := flag.Int("seconds", 0, "exit after this many seconds (0: run forever)")
	hash := flag.Bool("hash", false, "also hash with crypto/sha256 in every iteration")
	flag.Parse()
	for i := 0; i < *goroutines; i++ {
		go worker(*hash)
	}
	fmt.Fprintf(os.Stderr, "go_cpu_split: pid %d, %d goroutines\n", os.Getpid(), *goroutines)
	if *seconds > 0 {
		time.Sleep(time.Duration(*seconds) * time.Second)
		return
	}
	select {}
}
