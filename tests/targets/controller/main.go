// controller is a small controller-runtime manager, as kubebuilder scaffolds them: a ConfigMap
// reconciler with a time.Sleep in its loop that allocates and hashes (main.(*reconciler).render:
// 3 units of hashing and 16 KiB kept live; main.(*reconciler).audit: 1 unit), and the manager's
// own pprof server (Options.PprofBindAddress). With no cluster here, the manager talks to a fake API server that
// this process starts on a loopback port: discovery for core/v1, list and watch of ConfigMaps
// (a MODIFIED event every few milliseconds, round-robin over the objects), so the informer,
// work queue and reconcilers are controller-runtime's real code paths.
//
// Usage: controller -pprof-bind-address 127.0.0.1:PORT [-objects N] [-keep N] [-rate R]
// Prints "ready" on stdout once the cache has synced and the first reconciles ran.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// ---- The fake API server ----

type fakeAPI struct {
	objects int
	rv      atomic.Int64
}

func (f *fakeAPI) configMap(i int, rv int64) corev1.ConfigMap {
	return corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("cm-%d", i), Namespace: "default",
			UID:             types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)),
			ResourceVersion: strconv.FormatInt(rv, 10),
		},
		Data: map[string]string{"generation": strconv.FormatInt(rv, 10), "payload": "x"},
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api":
		writeJSON(w, map[string]any{"kind": "APIVersions", "versions": []string{"v1"},
			"serverAddressByClientCIDRs": []map[string]string{{"clientCIDR": "0.0.0.0/0", "serverAddress": r.Host}}})
	case "/apis":
		writeJSON(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{}})
	case "/api/v1":
		writeJSON(w, map[string]any{"kind": "APIResourceList", "groupVersion": "v1",
			"resources": []map[string]any{{"name": "configmaps", "singularName": "configmap",
				"namespaced": true, "kind": "ConfigMap",
				"verbs": []string{"get", "list", "watch", "create", "update", "patch", "delete"}}}})
	case "/version":
		writeJSON(w, map[string]string{"major": "1", "minor": "34", "gitVersion": "v1.34.0"})
	case "/api/v1/configmaps", "/api/v1/namespaces/default/configmaps":
		if r.URL.Query().Get("watch") == "true" {
			f.watch(w, r)
			return
		}
		rv := f.rv.Load()
		list := corev1.ConfigMapList{TypeMeta: metav1.TypeMeta{Kind: "ConfigMapList", APIVersion: "v1"},
			ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatInt(rv, 10)}}
		for i := 0; i < f.objects; i++ {
			list.Items = append(list.Items, f.configMap(i, rv))
		}
		writeJSON(w, list)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: "Failure", Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound,
			Message: r.URL.Path + " not found"})
	}
}

// watch streams events: the initial state first if the client asks for it (WatchList), then a
// MODIFIED event for one object after another until the client goes or its timeout passes.
func (f *fakeAPI) watch(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(typ string, obj any) bool {
		if err := enc.Encode(map[string]any{"type": typ, "object": obj}); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if r.URL.Query().Get("sendInitialEvents") == "true" {
		rv := f.rv.Load()
		for i := 0; i < f.objects; i++ {
			send("ADDED", f.configMap(i, rv))
		}
		bm := f.configMap(0, rv)
		bm.Data = nil
		bm.Annotations = map[string]string{"k8s.io/initial-events-end": "true"}
		send("BOOKMARK", bm)
	}
	timeout := 5 * time.Minute
	if s, err := strconv.Atoi(r.URL.Query().Get("timeoutSeconds")); err == nil && s > 0 {
		timeout = time.Duration(s) * time.Second
	}
	end := time.After(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-r.Context().Done():
			return
		case <-end:
			return
		case <-tick.C:
			if !send("MODIFIED", f.configMap(i%f.objects, f.rv.Add(1))) {
				return
			}
		}
	}
}

// ---- The controller ----

type reconciler struct {
	client client.Client
	mu     sync.Mutex
	keep   [][]byte // the newest rendered objects stay live (the controller's "cache")
	next   int
	count  atomic.Int64
}

// Reconcile renders the object (allocating), audits it, and sleeps like a controller waiting on
// an external system.
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cm corev1.ConfigMap
	if err := r.client.Get(ctx, req.NamespacedName, &cm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.render(&cm)
	r.audit(&cm)
	r.count.Add(1)
	time.Sleep(time.Millisecond)
	return ctrl.Result{}, nil
}

// render: most of the reconciler's CPU, and the objects it keeps live.
//
//go:noinline
func (r *reconciler) render(cm *corev1.ConfigMap) {
	buf := make([]byte, 16<<10)
	copy(buf, cm.Name)
	burn(buf, 3)
	r.mu.Lock()
	r.keep[r.next%len(r.keep)] = buf
	r.next++
	r.mu.Unlock()
}

// audit: a third of render's hashing.
//
//go:noinline
func (r *reconciler) audit(cm *corev1.ConfigMap) {
	buf := make([]byte, 4<<10)
	copy(buf, cm.ResourceVersion)
	burn(buf, 1)
}

// burn hashes `buf` units x 400 times: a fixed amount of work, so the split holds in CPU time
// however the threads are scheduled.
func burn(buf []byte, units int) {
	for i := 0; i < units*400; i++ {
		s := sha256.Sum256(buf[:1024])
		buf[0] = s[0]
	}
}

func main() {
	pprofAddr := flag.String("pprof-bind-address", "127.0.0.1:0", "the manager's pprof server")
	objects := flag.Int("objects", 64, "ConfigMaps the fake API server holds")
	keep := flag.Int("keep", 512, "rendered objects kept live")
	rate := flag.Int("rate", 0, "runtime.MemProfileRate (0: Go's default)")
	flag.Parse()
	if *rate > 0 {
		runtime.MemProfileRate = *rate
	}
	ctrl.SetLogger(logr.Discard())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	api := &fakeAPI{objects: *objects}
	api.rv.Store(1000)
	go http.Serve(ln, api)

	cfg := &rest.Config{Host: "http://" + ln.Addr().String(), QPS: 1000, Burst: 1000}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		PprofBindAddress:       *pprofAddr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
	r := &reconciler{client: mgr.GetClient(), keep: make([][]byte, *keep)}
	err = ctrl.NewControllerManagedBy(mgr).For(&corev1.ConfigMap{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).Complete(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
	go func() {
		for r.count.Load() < int64(*objects) {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Println("ready")
	}()
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}
