// go_gzip_server is an HTTP server whose handler gzips 128 KiB per request: a server workload
// whose threads block and wake all the time (network, scheduler, sysmon), unlike a CPU loop. It
// serves its own net/http/pprof on the same address, so a test can compare the agent's CPU
// profile with Go's own profile of the same window. Usage: go_gzip_server -addr 127.0.0.1:PORT
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

var payload []byte

// handler compresses the payload into a fresh buffer and answers its length.
func handler(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(payload); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	zw.Close()
	fmt.Fprintf(w, "%d\n", buf.Len())
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	// Compressible but not trivial: words drawn from a small vocabulary.
	rng := rand.New(rand.NewSource(1))
	words := []string{"controller", "reconcile", "pod", "namespace", "watch", "informer",
		"cache", "queue", "lease", "status", "spec", "metadata", "owner", "finalizer"}
	var b bytes.Buffer
	for b.Len() < 128<<10 {
		io.WriteString(&b, words[rng.Intn(len(words))])
		b.WriteByte(" \n"[rng.Intn(2)])
	}
	payload = b.Bytes()[:128<<10]
	http.HandleFunc("/work", handler)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "listening %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
