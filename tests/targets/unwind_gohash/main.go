// unwind_gohash spends nearly all its time in crypto/sha256's assembly (which uses BP as a
// general register, so frame-pointer walks lose its callers) with a known split: hashHot hashes
// 3 buffers for every 1 that hashCold hashes. With -deep the loop runs under a function whose
// frame holds a 64 KiB array, so the goroutine's root lies far beyond any bounded copy of the
// stack taken at a sample. Usage: unwind_gohash [-seconds S] [-deep]
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"time"
)

var sink byte

//go:noinline
func hashHot(buf []byte) byte {
	var b byte
	for i := 0; i < 3; i++ {
		s := sha256.Sum256(buf)
		b ^= s[0]
	}
	return b
}

//go:noinline
func hashCold(buf []byte) byte {
	s := sha256.Sum256(buf)
	return s[1]
}

func main() {
	seconds := flag.Int("seconds", 0, "exit after this many seconds (0: run forever)")
	deep := flag.Bool("deep", false, "hash under a 64 KiB stack frame")
	flag.Parse()
	if *seconds > 0 {
		time.AfterFunc(time.Duration(*seconds)*time.Second, func() { os.Exit(0) })
	}
	buf := make([]byte, 256<<10)
	if *deep {
		deepLoop(buf, 1)
		return
	}
	loop(buf)
}

// deepLoop keeps a 64 KiB array in its frame while loop runs.
//
//go:noinline
func deepLoop(buf []byte, i int) {
	var pad [64 << 10]byte
	pad[i] = byte(len(buf))
	loop(buf)
	sink ^= pad[i]
}

//go:noinline
func loop(buf []byte) {
	for {
		buf[0] ^= hashHot(buf)
		buf[1] ^= hashCold(buf)
		sink ^= buf[0]
		if sink == 255 && buf[1] == 255 {
			fmt.Println("unlikely")
		}
	}
}
