//go:build go1.25

package main

import (
	"runtime"
	"time"
)

// startBlockedCleanup registers a cleanup (runtime.AddCleanup; from Go 1.25 run by goroutines of
// their own) that blocks forever and waits until it runs: the goroutine running cleanups then
// counts as a user goroutine.
func startBlockedCleanup() bool {
	running := make(chan struct{})
	runtime.AddCleanup(new([64]byte), blockedCleanup, running)
	for done := false; !done; {
		runtime.GC()
		select {
		case <-running:
			done = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

//go:noinline
func blockedCleanup(running chan struct{}) {
	close(running)
	<-never
}
