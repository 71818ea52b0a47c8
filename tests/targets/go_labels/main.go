// go_labels burns CPU under pprof labels and serves its own /debug/pprof, so that tests compare
// the agent's CPU profile with Go's own. Each worker goroutine runs, under pprof.Do(job=burn),
// a loop of pprof.Do(worker=a){burnA: 1 unit} and pprof.Do(worker=b){burnB: 3 units}: a new
// label set per call, as request-scoped labels are. Prints "port=N" once listening.
// Usage: go_labels [-goroutines N]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime/pprof"
	"time"
)

const unit = 400000 // xorshift rounds, ~0.5 ms

var sink uint64

//go:noinline
func burnA(x uint64) uint64 {
	for i := 0; i < unit; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func burnB(x uint64) uint64 {
	x++
	for i := 0; i < 3*unit; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func worker() {
	pprof.Do(context.Background(), pprof.Labels("job", "burn"), func(ctx context.Context) {
		x := uint64(time.Now().UnixNano())
		for {
			pprof.Do(ctx, pprof.Labels("worker", "a"), func(context.Context) { x = burnA(x) })
			pprof.Do(ctx, pprof.Labels("worker", "b"), func(context.Context) { x = burnB(x) })
			sink += x
		}
	})
}

func main() {
	goroutines := flag.Int("goroutines", 1, "busy goroutines")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; i < *goroutines; i++ {
		go worker()
	}
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)
	http.Serve(ln, nil)
}
