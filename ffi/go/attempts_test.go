package sidekick

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// The shared attempt-policy vectors (tests/vectors/attempt_policy.txt at the repository root),
// through Balancer.Attempts, Attempts.Pick and Attempts.Decide.
const vectorsPath = "../../tests/vectors/attempt_policy.txt"

var outcomeNames = map[string]Outcome{
	"success": OutcomeSuccess, "connect": OutcomeConnect, "reset": OutcomeReset,
	"timeout": OutcomeTimeout, "failed": OutcomeFailed, "cancelled": OutcomeCancelled,
}

func parseOutcome(word string) (Outcome, int, error) {
	if o, ok := outcomeNames[word]; ok {
		return o, 0, nil
	}
	s, err := strconv.Atoi(word)
	if err != nil || s < 100 || s > 599 {
		return 0, 0, fmt.Errorf("bad outcome %q", word)
	}
	return OutcomeStatus, s, nil
}

func decisionName(d Decision, reason string) string {
	switch d {
	case DecisionDone:
		return "done"
	case DecisionRetry:
		return "retry:" + reason
	default:
		return "giveup:" + reason
	}
}

func runVector(t *testing.T, f []string) {
	config := "max_attempts=" + f[2]
	if f[3] == "exhausted" {
		config += "; retry_budget_ratio=0; retry_budget_min_per_sec=0"
	}
	b, err := New([]string{f[1]}, Options{DisableHealthCheck: true, Config: config})
	if err != nil {
		t.Fatalf("balancer: %v", err)
	}
	defer b.Close()
	a, err := b.Attempts(f[4], f[5] == "1", f[6] == "1")
	if err != nil {
		t.Fatalf("attempts: %v", err)
	}
	defer a.Close()
	lease, err := a.Pick()
	if err != nil {
		t.Fatalf("pick: %v", err)
	}
	for i, step := range f[7:] {
		lhs, want, ok := strings.Cut(step, "=")
		word, intact, ok2 := strings.Cut(lhs, "/")
		if !ok || !ok2 {
			t.Fatalf("malformed step %q", step)
		}
		outcome, status, err := parseOutcome(word)
		if err != nil {
			t.Fatal(err)
		}
		if lease == nil {
			t.Fatalf("step %d: no lease left", i+1)
		}
		d, reason, next, err := a.Decide(lease, outcome, status, intact == "1")
		if err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		if got := decisionName(d, reason); got != want {
			t.Fatalf("step %d: got %s, want %s", i+1, got, want)
		}
		lease = nil
		switch d {
		case DecisionRetry:
			lease = next
		case DecisionDone:
			if err := next.Done(outcome, status, 0); err != nil {
				t.Fatalf("step %d: finishing a done lease: %v", i+1, err)
			}
		default:
			if next != nil {
				t.Fatalf("step %d: a give-up returned a lease", i+1)
			}
		}
	}
	if lease != nil {
		t.Fatal("the steps left a retry open")
	}
	if a.Count() != len(f)-7 {
		t.Fatalf("%d attempts counted, want %d", a.Count(), len(f)-7)
	}
}

func TestAttemptPolicyVectors(t *testing.T) {
	file, err := os.Open(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	cases := 0
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 8 {
			t.Fatalf("case %s: %d fields, need 8 or more", f[0], len(f))
		}
		cases++
		t.Run(f[0], func(t *testing.T) { runVector(t, f) })
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cases == 0 {
		t.Fatal("no vector found")
	}
	t.Logf("attempt policy vectors: %d cases", cases)
}

// Transport follows the engine's decisions: a 503 goes to the next site for a GET and for a POST
// with an Idempotency-Key, and comes back as it is for a plain POST.
func TestTransportFollowsTheEngineOnStatuses(t *testing.T) {
	var badHits atomic.Int64
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(bad.Close)
	good := newBackend(t, 0)
	bal := mustNew(t, []string{bad.URL, good.url}, Options{DisableHealthCheck: true})
	client := &http.Client{Transport: &Transport{Balancer: bal}}
	send := func(method string, header http.Header) (int, string) {
		req, _ := http.NewRequest(method, "http://virtual/obj", bytes.NewReader([]byte("payload")))
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	if code, body := send(http.MethodGet, nil); code != 200 || body != "ok GET /obj len=7" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if code, _ := send(http.MethodPost, nil); code != 503 {
		t.Fatalf("POST without a key: %d, want the 503 as it is", code)
	}
	key := http.Header{"Idempotency-Key": {"k-1"}}
	if code, body := send(http.MethodPost, key); code != 200 || body != "ok POST /obj len=7" {
		t.Fatalf("POST with a key: %d %q", code, body)
	}
	if badHits.Load() != 3 || good.hits.Load() != 2 {
		t.Fatalf("hits: bad %d, good %d; want 3 and 2", badHits.Load(), good.hits.Load())
	}
}
