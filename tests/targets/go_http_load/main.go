// go_http_load requests a URL in a loop from -clients goroutines, each request on a new
// connection (like looping curl clients, without a process per request), until killed.
// Usage: go_http_load -url http://127.0.0.1:PORT/work [-clients 2]
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	clients := flag.Int("clients", 2, "concurrent clients")
	flag.Parse()
	c := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
	for i := 0; i < *clients; i++ {
		go func() {
			for {
				resp, err := c.Get(*url)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	log.Printf("loading %s with %d clients", *url, *clients)
	select {}
}
