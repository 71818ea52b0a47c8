// unwind_govdso spends most of its time reading the clock (time.Now: runtime.nanotime1 switches
// to the g0 stack and calls the vDSO's clock_gettime, code with neither pclntab nor a file to
// read CFI from) with a known split: clockHot reads it 3 times for every 1 of clockCold.
// Usage: unwind_govdso [-seconds S]
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

var sink int64

//go:noinline
func clockHot() int64 {
	var s int64
	for i := 0; i < 3; i++ {
		s += time.Now().UnixNano()
	}
	return s
}

//go:noinline
func clockCold() int64 {
	return time.Now().UnixNano()
}

func main() {
	seconds := flag.Int("seconds", 0, "exit after this many seconds (0: run forever)")
	flag.Parse()
	if *seconds > 0 {
		time.AfterFunc(time.Duration(*seconds)*time.Second, func() { os.Exit(0) })
	}
	for {
		sink ^= clockHot()
		sink ^= clockCold()
		if sink == 1 {
			fmt.Println("unlikely")
		}
	}
}
