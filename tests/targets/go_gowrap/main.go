// go_gowrap: CPU spent in functions started by `go` statements with arguments, whose callees the
// compiler inlines into its wrappers (main.main.gowrap1, Go 1.22+; a method value's -fm wrapper).
// Go's traceback leaves such wrapper levels out of every profile. The program writes its own CPU
// profile (runtime/pprof) over -seconds to -cpuprofile, then exits.
package main

import (
	"flag"
	"log"
	"os"
	"runtime/pprof"
	"time"
)

var sink [2]int

func spin(slot, n int) {
	s := 0
	for i := 0; i < n; i++ {
		s += i * i % 7
	}
	sink[slot] = s
}

type looper struct{ slot int }

func (l looper) run() { spin(l.slot, 1<<62) }

func main() {
	seconds := flag.Int("seconds", 4, "how long to profile itself")
	out := flag.String("cpuprofile", "", "where to write its own CPU profile")
	flag.Parse()
	go spin(0, 1<<62)
	go looper{slot: 1}.run()
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	time.Sleep(time.Duration(*seconds) * time.Second)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
