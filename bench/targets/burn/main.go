// burn keeps N goroutines busy (sha256 over a buffer, a few frames deep, through crypto/sha256's
// assembly) for the benchmark's memory and latency phases. Usage: burn -goroutines N -seconds S
package main

import (
	"crypto/sha256"
	"flag"
	"os"
	"time"
)

var sinks [64]byte

//go:noinline
func hashBlock(buf []byte) byte {
	s := sha256.Sum256(buf)
	return s[0]
}

//go:noinline
func level2(buf []byte, n int) byte {
	var b byte
	for i := 0; i < n; i++ {
		b ^= hashBlock(buf)
	}
	return b
}

//go:noinline
func level1(id int, buf []byte) {
	for {
		sinks[id%len(sinks)] ^= level2(buf, 16)
	}
}

func main() {
	n := flag.Int("goroutines", 2, "busy goroutines")
	seconds := flag.Int("seconds", 60, "exit after this many seconds")
	flag.Parse()
	for i := 0; i < *n; i++ {
		buf := make([]byte, 64<<10)
		buf[0] = byte(i)
		go level1(i, buf)
	}
	time.Sleep(time.Duration(*seconds) * time.Second)
	os.Exit(0)
}
