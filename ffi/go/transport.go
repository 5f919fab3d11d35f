package sidekick

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Transport is an http.RoundTripper that sends each request to an endpoint picked by Balancer:
// it rewrites the URL's scheme and host to the endpoint's (prefixing the endpoint's base path, if
// any), keeps the original host in req.Host (so signed requests stay valid), reports the status
// and the latency to the response head, and retries on another endpoint as the engine's attempt
// policy decides (Balancer.Attempts): a connection that could not be established for any
// request; a reset, a timeout or one of the balancer's retry statuses for an idempotent request
// (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or with an Idempotency-Key header) whose body can be
// sent again (req.GetBody is set, as http.NewRequest does for bytes, strings and bytes.Reader
// bodies), within the balancer's MaxAttempts and retry budget.
type Transport struct {
	// Balancer picks the endpoints and decides the retries (required).
	Balancer *Balancer
	// Base sends the rewritten requests; nil means http.DefaultTransport.
	Base http.RoundTripper

	endpoints sync.Map // endpoint id -> *url.URL
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// endpointURL parses a lease's URL once per endpoint.
func (t *Transport) endpointURL(l *Lease) (*url.URL, error) {
	if u, ok := t.endpoints.Load(l.ID()); ok {
		return u.(*url.URL), nil
	}
	u, err := url.Parse(l.URL())
	if err != nil {
		return nil, err
	}
	t.endpoints.Store(l.ID(), u)
	return u, nil
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Balancer == nil {
		closeBody(req)
		return nil, errors.New("sidekick: Transport.Balancer is nil")
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	// Go's transport closes a body it could not send: only a body it can make again is intact.
	replayable := !hasBody || req.GetBody != nil
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	key := req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
	attempts, err := t.Balancer.Attempts(method, key, replayable)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	defer attempts.Close()
	lease, err := attempts.Pick()
	if err != nil {
		closeBody(req)
		return nil, err
	}
	// Bounded by the engine: every endpoint at most once, at most 16 attempts.
	for attempt := 0; ; attempt++ {
		out, err := t.rewrite(req, lease, host, attempt)
		if err != nil {
			lease.Cancel()
			if attempt == 0 {
				closeBody(req)
			}
			return nil, err
		}
		start := time.Now()
		resp, err := t.base().RoundTrip(out)
		latency := time.Since(start)
		outcome, status := OutcomeStatus, 0
		if err == nil {
			status = resp.StatusCode
		} else {
			outcome = classify(req.Context(), err)
		}
		decision, _, next, derr := attempts.Decide(lease, outcome, status, replayable)
		if derr != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, derr
		}
		switch decision {
		case DecisionRetry:
			if resp != nil {
				drain(resp.Body)
			}
			lease = next
			continue
		case DecisionDone:
			next.Done(outcome, status, latency)
		}
		return resp, err
	}
}

// drain reads a little of a body that will not be used (so its connection can be reused) and
// closes it.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// rewrite makes the request for one attempt: a copy aimed at the endpoint, with a fresh body
// after the first attempt.
func (t *Transport) rewrite(req *http.Request, lease *Lease, host string, attempt int) (*http.Request, error) {
	ep, err := t.endpointURL(lease)
	if err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = ep.Scheme
	out.URL.Host = ep.Host
	if ep.Path != "" && ep.Path != "/" {
		base := strings.TrimSuffix(ep.Path, "/")
		out.URL.Path = base + req.URL.Path
		if req.URL.RawPath != "" {
			out.URL.RawPath = base + req.URL.RawPath
		}
	}
	out.Host = host
	if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		out.Body = body
	}
	return out, nil
}

// classify translates a net/http error into the engine's outcome.
func classify(ctx context.Context, err error) Outcome {
	if ctx.Err() != nil {
		return OutcomeCancelled // the caller gave up: says nothing about the endpoint
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return OutcomeConnect
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return OutcomeTimeout
	}
	return OutcomeReset
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

var _ http.RoundTripper = (*Transport)(nil)
var _ io.Closer = (*Balancer)(nil)
