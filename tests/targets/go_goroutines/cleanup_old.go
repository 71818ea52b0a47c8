//go:build !go1.25

package main

// startBlockedCleanup: before Go 1.25 cleanups run on the finalizer goroutine, which -finalizer
// blocks.
func startBlockedCleanup() bool { return false }
