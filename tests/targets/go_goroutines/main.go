// go_goroutines holds known goroutine populations and serves its own net/http/pprof on a
// loopback port, printing "port=N" once they are all in place, so tests can compare the agent's
// goroutine, threadcreate, block and mutex profiles with Go's own of the same process:
//   - -recv goroutines blocked in a channel receive in recvWaiter (never woken),
//   - -select goroutines in a select with a timer in selectWaiter (an hour: never fires),
//   - -mutex goroutines waiting on a sync.Mutex held by main in mutexWaiter,
//   - -spin goroutines running a busy loop in spinner,
//   - -churn goroutines per millisecond created by churner that each run briefly, sleep half a
//     millisecond and exit,
//   - -labeled goroutines blocked under pprof labels {worker: w<i%3>} in labeledWaiter,
//   - -contend: workers contending on a mutex and channel (block and mutex profile buckets),
//     with -block_rate / -mutex_fraction passed to SetBlockProfileRate /
//     SetMutexProfileFraction (0: never called),
//   - -finalizer: a finalizer (blockedFinalizer) that blocks forever, so the finalizer goroutine
//     runs a finalizer and counts as a user goroutine.
//
// Usage: go_goroutines [-recv N] [-select N] [-mutex N] [-spin N] [-churn N] [-labeled N]
// [-contend] [-block_rate R] [-mutex_fraction F] [-finalizer]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

var (
	never   = make(chan int)
	held    sync.Mutex
	started sync.WaitGroup
	sink    atomic.Int64
)

//go:noinline
func recvWaiter() {
	started.Done()
	<-never
}

//go:noinline
func selectWaiter() {
	started.Done()
	select {
	case <-never:
	case <-time.After(time.Hour):
	}
}

//go:noinline
func mutexWaiter() {
	started.Done()
	held.Lock()
	held.Unlock()
}

//go:noinline
func spinner() {
	started.Done()
	x := int64(0)
	for {
		for i := 0; i < 1000000; i++ {
			x = x*31 + int64(i)
		}
		sink.Store(x)
	}
}

//go:noinline
func labeledWaiter(i int) {
	pprof.Do(context.Background(), pprof.Labels("worker", fmt.Sprintf("w%d", i%3)),
		func(context.Context) {
			started.Done()
			<-never
		})
}

// finalizerRunning is closed once blockedFinalizer runs: from then on the finalizer goroutine
// is a user goroutine for Go's goroutine profile (it runs a finalizer), blocked in a receive.
var finalizerRunning = make(chan struct{})

//go:noinline
func blockedFinalizer(*[64]byte) {
	close(finalizerRunning)
	<-never
}

//go:noinline
func churnWork(n int) {
	x := 0
	for i := 0; i < n; i++ {
		x += i
	}
	sink.Add(int64(x))
	time.Sleep(500 * time.Microsecond)
}

//go:noinline
func churner(perMilli int) {
	for {
		for i := 0; i < perMilli; i++ {
			go churnWork(1000)
		}
		time.Sleep(time.Millisecond)
	}
}

var contendMu sync.Mutex

//go:noinline
func contendLock() {
	for {
		contendMu.Lock()
		time.Sleep(100 * time.Microsecond)
		contendMu.Unlock()
		// Let the lock's wait queue drain at times: the runtime stamps a waiter's start only if
		// mutex profiling is on when it queues, and a waiter queued behind an unstamped one
		// inherits its stamp, so a queue that never empties records nothing once enabled. (Sleeps
		// last at least ~1 ms here: Go's timers wait in epoll with a millisecond timeout.)
		time.Sleep(5 * time.Millisecond)
	}
}

//go:noinline
func contendChan(ch chan int) {
	for {
		<-ch
	}
}

//go:noinline
func contendSend(ch chan int) {
	for {
		time.Sleep(200 * time.Microsecond)
		ch <- 1
	}
}

func main() {
	recv := flag.Int("recv", 1000, "goroutines blocked in a channel receive")
	sel := flag.Int("select", 100, "goroutines in a select with a timer")
	mu := flag.Int("mutex", 10, "goroutines waiting on a sync.Mutex")
	spin := flag.Int("spin", 2, "goroutines running a busy loop")
	churn := flag.Int("churn", 0, "goroutines created per millisecond, each exiting quickly")
	labeled := flag.Int("labeled", 0, "goroutines blocked under pprof labels")
	finalizer := flag.Bool("finalizer", false, "a finalizer that blocks forever (the finalizer goroutine then counts as a user goroutine)")
	contend := flag.Bool("contend", false, "contend on a mutex and a channel")
	blockRate := flag.Int("block_rate", 0, "runtime.SetBlockProfileRate (0: not called)")
	mutexFraction := flag.Int("mutex_fraction", 0, "runtime.SetMutexProfileFraction (0: not called)")
	flag.Parse()
	if *blockRate > 0 {
		runtime.SetBlockProfileRate(*blockRate)
	}
	if *mutexFraction > 0 {
		runtime.SetMutexProfileFraction(*mutexFraction)
	}
	held.Lock()
	started.Add(*recv + *sel + *mu + *spin + *labeled)
	for i := 0; i < *recv; i++ {
		go recvWaiter()
	}
	for i := 0; i < *sel; i++ {
		go selectWaiter()
	}
	for i := 0; i < *mu; i++ {
		go mutexWaiter()
	}
	for i := 0; i < *spin; i++ {
		go spinner()
	}
	for i := 0; i < *labeled; i++ {
		go labeledWaiter(i)
	}
	started.Wait()
	if *finalizer {
		runtime.SetFinalizer(new([64]byte), blockedFinalizer)
		for done := false; !done; {
			runtime.GC()
			select {
			case <-finalizerRunning:
				done = true
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if *churn > 0 {
		go churner(*churn)
	}
	if *contend {
		ch := make(chan int)
		for i := 0; i < 4; i++ {
			go contendLock()
		}
		go contendChan(ch)
		go contendSend(ch)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Let the waiters reach their blocking calls (Done precedes the block by a few instructions).
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
