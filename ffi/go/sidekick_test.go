package sidekick

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a real HTTP server on 127.0.0.1 that counts the requests it serves.
type backend struct {
	srv      *httptest.Server
	url      string
	hits     atomic.Int64
	lastHost atomic.Value
	delay    time.Duration
}

func newBackend(t testing.TB, delay time.Duration) *backend {
	t.Helper()
	b := &backend{delay: delay}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		b.hits.Add(1)
		b.lastHost.Store(r.Host)
		if b.delay > 0 {
			time.Sleep(b.delay)
		}
		w.Header().Set("X-Backend", b.url)
		fmt.Fprintf(w, "ok %s %s len=%d", r.Method, r.URL.RequestURI(), n)
	}))
	b.srv.Listener.Close()
	b.srv.Listener = ln
	b.srv.Start()
	b.url = b.srv.URL
	t.Cleanup(b.srv.Close)
	return b
}

// kill stops the backend abruptly: no new connections, open ones are closed mid-request.
func (b *backend) kill() {
	b.srv.Listener.Close()
	b.srv.CloseClientConnections()
}

// deadURL is an address where nothing listens.
func deadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func mustNew(t testing.TB, sites []string, opts Options) *Balancer {
	t.Helper()
	b, err := New(sites, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// waitStates waits (at most 10 s) until every listed endpoint URL is in the wanted state
// ("out" stands for any state but "up").
func waitStates(t *testing.T, b *Balancer, want map[string]string) []EndpointInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		eps, err := b.Endpoints()
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, e := range eps {
			if s, listed := want[e.URL]; listed && s != e.State && !(s == "out" && e.State != "up") {
				ok = false
			}
		}
		if ok {
			return eps
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints never reached %v: %+v", want, eps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPickDoneEndpoints(t *testing.T) {
	b1, b2, b3 := newBackend(t, 0), newBackend(t, 0), newBackend(t, 0)
	bal := mustNew(t, []string{b1.url + "," + b2.url, b3.url}, Options{
		HealthPath:     "/health",
		HealthInterval: 100 * time.Millisecond,
		Policy:         "round-robin",
		WorkerThreads:  1,
	})
	if err := bal.Ready(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	eps := waitStates(t, bal, map[string]string{b1.url: "up", b2.url: "up", b3.url: "up"})
	if len(eps) != 3 {
		t.Fatalf("want 3 endpoints, got %+v", eps)
	}
	if !bal.Available() {
		t.Fatal("Available() is false")
	}

	seen := map[string]int{}
	var firstSite []uint64
	for i := 0; i < 100; i++ {
		l, err := bal.Pick()
		if err != nil {
			t.Fatal(err)
		}
		seen[l.URL()]++
		if l.Site() != 0 {
			t.Fatalf("pick %d went to site %d", i, l.Site())
		}
		if len(firstSite) < 2 && (len(firstSite) == 0 || firstSite[0] != l.ID()) {
			firstSite = append(firstSite, l.ID())
		}
		if err := l.Done(OutcomeStatus, 200, 2*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := l.Done(OutcomeSuccess, 0, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Done: %v", err)
		}
	}
	if seen[b1.url] != 50 || seen[b2.url] != 50 {
		t.Fatalf("round-robin over the first site: %v", seen)
	}

	// Excluding the whole first site falls over to the second.
	l, err := bal.PickExcluding(firstSite)
	if err != nil {
		t.Fatal(err)
	}
	if l.URL() != b3.url || l.Site() != 1 {
		t.Fatalf("PickExcluding gave %s (site %d)", l.URL(), l.Site())
	}
	l.Cancel()
	l.Cancel() // a second Cancel does nothing

	eps, err = bal.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		if e.URL == b1.url && (e.Requests != 50 || e.Latency <= 0 || e.Inflight != 0 || e.ID == 0) {
			t.Fatalf("statistics of %s: %+v", e.URL, e)
		}
	}

	// A lease outlives Close; calls after Close fail cleanly.
	l, err = bal.Pick()
	if err != nil {
		t.Fatal(err)
	}
	bal.Close()
	if err := l.Done(OutcomeSuccess, 0, 0); err != nil {
		t.Fatalf("Done after Close: %v", err)
	}
	if _, err := bal.Pick(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pick after Close: %v", err)
	}
	bal.Close()
}

func TestConfigErrors(t *testing.T) {
	site := []string{"http://127.0.0.1:1"}
	cases := []struct {
		sites []string
		opts  Options
		needs string
	}{
		{site, Options{Config: "colour=blue"}, "colour"},
		{site, Options{HealthJitter: 50}, "health_jitter"},
		{site, Options{Policy: "fastest"}, "fastest"},
		{site, Options{EjectStatuses: []int{200, 1000}}, "1000"},
		{nil, Options{}, "site"},
		{[]string{"ftp://x:{1...}"}, Options{}, "site 1"},
	}
	for _, c := range cases {
		_, err := New(c.sites, c.opts)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.needs) {
			t.Errorf("New(%v, %+v): want a config error naming %q, got %v", c.sites, c.opts, c.needs, err)
		}
	}
}

// Every option of Options reaches the engine, which validates it.
func TestEveryOptionIsAccepted(t *testing.T) {
	bal := mustNew(t, []string{"http://127.0.0.1:{10001...10002}"}, Options{
		Policy: "least", DisableHealthCheck: true, HealthPath: "/h", LastSiteHealthPath: "/r",
		HealthPort: 81, HealthInterval: time.Second, HealthTimeout: time.Second, HealthJitter: 1,
		HealthyStatuses: []int{200, 204}, Rise: 2, Fall: 2, EjectStatuses: []int{503}, EjectAfter: 2,
		MaxEjectedShare: 0.3, EjectBackoffBase: time.Second, EjectBackoffMax: time.Minute,
		FailureStatuses: []int{}, FailurePenalty: time.Second, EWMADecay: time.Second,
		DefaultRTT: time.Millisecond, MaxAttempts: 2, RetryStatuses: []int{503}, RetryBuffer: 1024,
		RetryBudgetRatio: 0.5, RetryBudgetMin: 5, HostPolicy: "rewrite", AttemptTimeout: time.Second,
		ConnectTimeout: time.Second, RRDNS: true, DNSRefresh: time.Minute,
		PoolIdleTimeout: time.Second, PoolMaxIdlePerHost: 4, WorkerThreads: 1,
		Config: "max_ejected_share=0",
	})
	eps, err := bal.Endpoints()
	if err != nil || len(eps) != 2 || eps[0].State != "up" {
		t.Fatalf("endpoints: %+v, %v", eps, err)
	}
}

func TestNotReadyAndNoEndpoint(t *testing.T) {
	bal := mustNew(t, []string{deadURL(t)}, Options{
		HealthInterval: 100 * time.Millisecond, ConnectTimeout: 500 * time.Millisecond, WorkerThreads: 1,
	})
	if err := bal.Ready(300 * time.Millisecond); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Ready: %v", err)
	}
	if _, err := bal.Pick(); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Pick: %v", err)
	}
	c := http.Client{Transport: &Transport{Balancer: bal}}
	if _, err := c.Get("http://virtual/"); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Transport: %v", err)
	}
}

func TestTransportRewritesAndKeepsHost(t *testing.T) {
	backends := []*backend{newBackend(t, 0), newBackend(t, 0), newBackend(t, 0)}
	bal := mustNew(t, []string{backends[0].url + "," + backends[1].url + "," + backends[2].url},
		Options{DisableHealthCheck: true, Policy: "round-robin"}) // every backend gets requests
	client := &http.Client{Transport: &Transport{Balancer: bal}}
	for i := 0; i < 60; i++ {
		resp, err := client.Get("http://bucket.virtual.example/key?x=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok GET /key?x=1 len=0" {
			t.Fatalf("response %d %q", resp.StatusCode, body)
		}
	}
	resp, err := client.Post("http://bucket.virtual.example/obj", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok POST /obj len=5" {
		t.Fatalf("POST answer %q", body)
	}
	for i, b := range backends {
		if b.hits.Load() == 0 {
			t.Fatalf("backend %d got no request", i)
		}
		if h := b.lastHost.Load(); h != "bucket.virtual.example" {
			t.Fatalf("backend %d saw Host %v", i, h)
		}
	}
}

func TestTransportRetriesConnectFailures(t *testing.T) {
	live := newBackend(t, 0)
	dead := deadURL(t)
	bal := mustNew(t, []string{dead + "," + live.url}, Options{
		DisableHealthCheck: true, MaxEjectedShare: 1, EjectBackoffBase: time.Minute, Policy: "round-robin",
	})
	client := &http.Client{Transport: &Transport{Balancer: bal}}
	for i := 0; i < 20; i++ {
		// A body that must be replayed on the retry: http.NewRequest sets GetBody for it.
		req, _ := http.NewRequest(http.MethodPost, "http://virtual/upload", bytes.NewReader([]byte("payload")))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok POST /upload len=7" {
			t.Fatalf("request %d: %q", i, body)
		}
	}
	eps, _ := bal.Endpoints()
	for _, e := range eps {
		if e.URL == dead && (e.State != "ejected" || e.Failures == 0) {
			t.Fatalf("dead endpoint: %+v", e)
		}
	}
}

// Kill one of three backends while 8 goroutines send requests: not one request may fail.
func TestTransportKillBackendUnderLoad(t *testing.T) {
	const workers, perWorker = 8, 250
	backends := []*backend{newBackend(t, time.Millisecond), newBackend(t, time.Millisecond), newBackend(t, time.Millisecond)}
	bal := mustNew(t, []string{backends[0].url + "," + backends[1].url + "," + backends[2].url}, Options{
		HealthPath: "/health", HealthInterval: 100 * time.Millisecond, HealthTimeout: time.Second,
		ConnectTimeout: time.Second,
	})
	if err := bal.Ready(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitStates(t, bal, map[string]string{backends[0].url: "up", backends[1].url: "up", backends[2].url: "up"})
	base := &http.Transport{MaxIdleConnsPerHost: workers, IdleConnTimeout: 30 * time.Second}
	defer base.CloseIdleConnections()
	attempts := &countingTransport{base: base}
	client := &http.Client{Transport: &Transport{Balancer: bal, Base: attempts}, Timeout: 10 * time.Second}

	var done, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	killed := make(chan struct{})
	var killOnce sync.Once
	var hitsAtKill int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				resp, err := client.Get(fmt.Sprintf("http://virtual/w%d/r%d", w, i))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				if done.Add(1) == workers*perWorker/3 {
					killOnce.Do(func() {
						hitsAtKill = backends[1].hits.Load()
						backends[1].kill()
						close(killed)
					})
				}
			}
		}(w)
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("the backend was never killed")
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, workers*perWorker, firstErr.Load())
	}
	after := backends[1].hits.Load() - hitsAtKill
	t.Logf("%d requests, 0 failed, %d failed attempts retried; killed backend served %d before and %d in flight at the kill; others %d and %d",
		workers*perWorker, attempts.failed.Load(), hitsAtKill, after, backends[0].hits.Load(), backends[2].hits.Load())
	if attempts.failed.Load() == 0 {
		t.Fatal("no attempt failed: the kill did not exercise the retry path")
	}
	eps := waitStates(t, bal, map[string]string{backends[1].url: "out"})
	for _, e := range eps {
		if e.URL != backends[1].url && e.State != "up" {
			t.Fatalf("a surviving backend is %s", e.State)
		}
	}
}

// countingTransport counts the attempts that failed without a response.
type countingTransport struct {
	base   http.RoundTripper
	failed atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		c.failed.Add(1)
	}
	return resp, err
}
