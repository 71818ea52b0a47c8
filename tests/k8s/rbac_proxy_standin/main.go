// rbac_proxy_standin stands in for quay.io/brancz/kube-rbac-proxy in the pod end-to-end test,
// only because that image cannot be pulled on the test machine. It accepts the same flags the
// webhook/kustomize patch pass (--secure-listen-address, --upstream, --allow-paths, --logtostderr,
// --v), serves TLS with a self-signed certificate made at start, returns 404 for paths outside
// --allow-paths and 401 without a bearer token (there is no API server for a TokenReview here),
// and proxies the rest to the upstream.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"log"
	"math/big"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"time"
)

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kube-rbac-proxy-standin"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func main() {
	listen := flag.String("secure-listen-address", "0.0.0.0:8443", "")
	upstream := flag.String("upstream", "http://127.0.0.1:6060/", "")
	allow := flag.String("allow-paths", "", "")
	flag.Bool("logtostderr", true, "")
	flag.Int("v", 0, "")
	flag.Parse()

	up, err := url.Parse(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	var patterns []string
	if *allow != "" {
		patterns = strings.Split(*allow, ",")
	}
	proxy := httputil.NewSingleHostReverseProxy(up)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed := len(patterns) == 0
		for _, p := range patterns {
			if ok, _ := path.Match(p, r.URL.Path); ok {
				allowed = true
			}
		}
		if !allowed {
			http.NotFound(w, r)
			return
		}
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		log.Printf("standin: %s %s", r.Method, r.URL.RequestURI())
		proxy.ServeHTTP(w, r)
	})
	srv := &http.Server{
		Addr:      *listen,
		Handler:   handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned()}},
	}
	log.Printf("kube-rbac-proxy stand-in on %s -> %s (allow %v)", *listen, *upstream, patterns)
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
