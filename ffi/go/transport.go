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

// maxConnectAttempts bounds the attempts of one request when every attempt fails to connect
// (each one goes to an endpoint not tried before), as the engine's own client does.
const maxConnectAttempts = 16

// Transport is an http.RoundTripper that sends each request to an endpoint picked by Balancer:
// it rewrites the URL's scheme and host to the endpoint's (prefixing the endpoint's base path, if
// any), keeps the original host in req.Host (so signed requests stay valid), reports the status
// and the latency to the response head, and retries on another endpoint:
//
//   - when the connection could not be established (nothing was sent), for any request;
//   - when the connection broke or timed out after sending, for idempotent requests (GET, HEAD,
//     OPTIONS, TRACE, PUT, DELETE, or with an Idempotency-Key header), at most MaxAttempts sends.
//
// A request with a body is retried only when it can be replayed (req.GetBody is set, as
// http.NewRequest does for bytes, strings and bytes.Reader bodies).
type Transport struct {
	// Balancer picks the endpoints (required).
	Balancer *Balancer
	// Base sends the rewritten requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// MaxAttempts bounds the sends of an idempotent request that failed after sending; 0 means 3.
	MaxAttempts int

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
	replayable := !hasBody || req.GetBody != nil
	maxSends := t.MaxAttempts
	if maxSends <= 0 {
		maxSends = 3
	}

	var tried []uint64
	var lastErr error
	sends := 0
	for attempt := 0; attempt < maxConnectAttempts; attempt++ {
		lease, err := t.Balancer.PickExcluding(tried)
		if err != nil {
			if attempt == 0 {
				closeBody(req)
				return nil, err
			}
			return nil, lastErr // every endpoint was tried: the last failure says most
		}
		tried = append(tried, lease.ID())
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
		if err == nil {
			lease.Done(OutcomeStatus, resp.StatusCode, latency)
			return resp, nil
		}
		outcome := classify(req.Context(), err)
		lease.Done(outcome, 0, latency)
		lastErr = err
		if outcome != OutcomeConnect {
			sends++
		}
		retry := replayable && (outcome == OutcomeConnect ||
			((outcome == OutcomeReset || outcome == OutcomeTimeout) && idempotent(req) && sends < maxSends))
		if !retry {
			return nil, err
		}
	}
	return nil, lastErr
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

// classify maps a transport error to the outcome reported to the balancer.
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

func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

var _ http.RoundTripper = (*Transport)(nil)
var _ io.Closer = (*Balancer)(nil)
