// Package sidekick is the Go binding of sidekick, a client-side HTTP load balancer, through its
// C ABI (ffi/include/sidekick.h). Your service keeps its own net/http stack: the balancer says
// which endpoint to send each request to and learns from how it went, while health probes run
// in the library's own threads.
//
//	b, err := sidekick.New([]string{"http://10.0.0.{1...4}:9000"}, sidekick.Options{HealthPath: "/minio/health/ready"})
//	if err != nil { ... }
//	defer b.Close()
//	if err := b.Ready(5 * time.Second); err != nil { ... }
//	lease, err := b.Pick()               // fails fast with ErrNoEndpoint
//	start := time.Now()
//	resp, err := http.Get(lease.URL() + "/bucket/key")
//	lease.Done(sidekick.OutcomeStatus, resp.StatusCode, time.Since(start))
//
// or let Transport do all of that for every request of an http.Client.
//
// Linking: the package links the static library libsidekick_ffi.a. The one build step,
// `bash ffi/scripts/build-go-lib.sh` in a checkout, builds it and puts it inside this module at
// lib/<GOOS>_<GOARCH>/, where lib_<GOOS>_<GOARCH>.go points the linker; a directory given with
// CGO_LDFLAGS=-L<dir> is searched first. sidekick.h is ffi/include/sidekick.h, copied into the
// module so that it builds outside the repository (ffi/scripts/check-header.sh keeps the copy equal).
package sidekick

/*
#cgo CFLAGS: -I${SRCDIR}
#cgo linux LDFLAGS: -l:libsidekick_ffi.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
#include <stdlib.h>
#include "sidekick.h"

// Results returned by value, so that no Go pointer crosses into C on the hot path.
typedef struct { sidekick_lease *lease; sidekick_error *err; sidekick_status status; } sk_pick_result;

static sk_pick_result sk_pick(const sidekick_balancer *b, const uint64_t *exclude, size_t n) {
	sk_pick_result r = {0};
	r.status = sidekick_balancer_pick_excluding(b, exclude, n, &r.lease, &r.err);
	return r;
}

typedef struct { sidekick_balancer *b; sidekick_error *err; sidekick_status status; } sk_new_result;

static sk_new_result sk_new(const char *const *sites, size_t n, const char *config) {
	sk_new_result r = {0};
	r.status = sidekick_balancer_new_from_config(sites, n, config, &r.b, &r.err);
	return r;
}

typedef struct { sidekick_endpoint_list *list; sidekick_error *err; sidekick_status status; } sk_list_result;

static sk_list_result sk_endpoints(const sidekick_balancer *b) {
	sk_list_result r = {0};
	r.status = sidekick_balancer_endpoints(b, &r.list, &r.err);
	return r;
}

static sidekick_error *sk_ready(const sidekick_balancer *b, uint64_t timeout_ms, sidekick_status *status) {
	sidekick_error *err = NULL;
	*status = sidekick_balancer_ready(b, timeout_ms, &err);
	return err;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Outcome says how a request sent to a leased endpoint ended (see Lease.Done).
type Outcome uint32

const (
	// OutcomeSuccess: it worked (the status argument of Done is ignored).
	OutcomeSuccess Outcome = C.SIDEKICK_OUTCOME_SUCCESS
	// OutcomeStatus: a response arrived with this HTTP status; the balancer classifies it (5xx
	// and 429 count as failures by default).
	OutcomeStatus Outcome = C.SIDEKICK_OUTCOME_STATUS
	// OutcomeConnect: the connection could not be established; nothing was sent. Ejects the
	// endpoint; retry elsewhere with PickExcluding.
	OutcomeConnect Outcome = C.SIDEKICK_OUTCOME_CONNECT
	// OutcomeReset: the connection broke after the request was sent. Ejects the endpoint.
	OutcomeReset Outcome = C.SIDEKICK_OUTCOME_RESET
	// OutcomeTimeout: no response in time. Ejects the endpoint.
	OutcomeTimeout Outcome = C.SIDEKICK_OUTCOME_TIMEOUT
	// OutcomeFailed: failed for a reason that says nothing about the connection.
	OutcomeFailed Outcome = C.SIDEKICK_OUTCOME_FAILED
	// OutcomeCancelled: the caller gave up; nothing is learnt (same as Lease.Cancel).
	OutcomeCancelled Outcome = C.SIDEKICK_OUTCOME_CANCELLED
)

// Status is a status code of the C API (sidekick_status).
type Status int

// The status codes; every *Error carries one.
const (
	StatusNullArgument    Status = C.SIDEKICK_STATUS_NULL_ARGUMENT
	StatusInvalidArgument Status = C.SIDEKICK_STATUS_INVALID_ARGUMENT
	StatusConfig          Status = C.SIDEKICK_STATUS_CONFIG
	StatusNoEndpoint      Status = C.SIDEKICK_STATUS_NO_ENDPOINT
	StatusNotReady        Status = C.SIDEKICK_STATUS_NOT_READY
	StatusConnect         Status = C.SIDEKICK_STATUS_CONNECT
	StatusTimeout         Status = C.SIDEKICK_STATUS_TIMEOUT
	StatusRequest         Status = C.SIDEKICK_STATUS_REQUEST
	StatusBody            Status = C.SIDEKICK_STATUS_BODY
	StatusRuntime         Status = C.SIDEKICK_STATUS_RUNTIME
	StatusPanic           Status = C.SIDEKICK_STATUS_PANIC
)

// String is the C library's short description of the status.
func (s Status) String() string { return C.GoString(C.sidekick_status_str(C.int(s))) }

// Error is the error of every failed call: the C status and the library's message. Match kinds
// with errors.Is against the Err* values.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return "sidekick: " + e.Message }

// Is reports whether target is an *Error with the same Status (so errors.Is(err, ErrNoEndpoint)
// works).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Errors to match with errors.Is.
var (
	ErrConfig     = &Error{Status: StatusConfig, Message: "invalid configuration"}
	ErrNoEndpoint = &Error{Status: StatusNoEndpoint, Message: "no endpoint available"}
	ErrNotReady   = &Error{Status: StatusNotReady, Message: "no endpoint became available in time"}
	ErrInvalid    = &Error{Status: StatusInvalidArgument, Message: "invalid argument"}
	// ErrClosed is returned by calls on a closed Balancer and by a second Done on a lease.
	ErrClosed = errors.New("sidekick: balancer closed or lease already done")
)

// takeError turns a C status and error object into a Go error, freeing the object.
func takeError(status C.sidekick_status, cerr *C.sidekick_error) error {
	if status == C.SIDEKICK_STATUS_OK {
		return nil
	}
	e := &Error{Status: Status(status)}
	if cerr != nil {
		e.Message = C.GoString(C.sidekick_error_message(cerr))
		C.sidekick_error_free(cerr)
	} else {
		e.Message = e.Status.String()
	}
	return e
}

// Options configures a Balancer. The zero value of every field means the library default
// (documented on the fields of sidekick_options in sidekick.h). Config carries anything else,
// e.g. values whose literal zero differs from the default ("max_ejected_share=0").
type Options struct {
	Policy             string // "p2c" (default), "least", "round-robin", "random"
	DisableHealthCheck bool   // probes are on by default
	HealthPath         string // default "/"
	LastSiteHealthPath string
	HealthPort         uint16
	HealthInterval     time.Duration // default 5 s
	HealthTimeout      time.Duration // default 10 s
	HealthJitter       float64       // default 0.2
	HealthyStatuses    []int         // nil: {200}
	Rise, Fall         int           // default 1 and 1
	EjectStatuses      []int         // nil: none
	EjectAfter         int           // default 5
	MaxEjectedShare    float64       // default 0.5
	EjectBackoffBase   time.Duration // default 1 s
	EjectBackoffMax    time.Duration // default 60 s
	FailureStatuses    []int         // nil: 500-599 and 429; empty non-nil: none
	FailurePenalty     time.Duration // default 1 s
	EWMADecay          time.Duration // default 10 s
	DefaultRTT         time.Duration // default 10 ms
	MaxAttempts        int           // default 3
	RetryStatuses      []int         // nil: {502, 503, 504}
	RetryBuffer        int           // bytes, default 65536
	RetryBudgetRatio   float64       // default 0.2
	RetryBudgetMin     int           // per second, default 10
	HostPolicy         string        // "keep" (default) or "rewrite"
	AttemptTimeout     time.Duration // default none
	ConnectTimeout     time.Duration // default 3 s
	RRDNS              bool          // default off
	DNSRefresh         time.Duration // default 30 s
	PoolIdleTimeout    time.Duration // default 90 s
	PoolMaxIdlePerHost int           // default 1024
	WorkerThreads      int           // default 2
	// Config holds extra `key=value` entries (separated by newlines or ';') in the syntax of
	// sidekick_balancer_new_from_config, applied after the fields above.
	Config string
}

// config renders the options as a config string for sidekick_balancer_new_from_config.
func (o Options) config() string {
	var sb strings.Builder
	str := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&sb, "%s=%s\n", k, v)
		}
	}
	num := func(k string, v int) {
		if v != 0 {
			fmt.Fprintf(&sb, "%s=%d\n", k, v)
		}
	}
	dur := func(k string, d time.Duration) {
		if d > 0 {
			ms := d.Milliseconds()
			if ms == 0 {
				ms = 1
			}
			fmt.Fprintf(&sb, "%s=%d\n", k, ms)
		}
	}
	flt := func(k string, f float64) {
		if f != 0 {
			fmt.Fprintf(&sb, "%s=%s\n", k, strconv.FormatFloat(f, 'g', -1, 64))
		}
	}
	list := func(k string, l []int) {
		if l != nil {
			parts := make([]string, len(l))
			for i, s := range l {
				parts[i] = strconv.Itoa(s)
			}
			fmt.Fprintf(&sb, "%s=%s\n", k, strings.Join(parts, ","))
		}
	}
	str("policy", o.Policy)
	if o.DisableHealthCheck {
		str("health_check", "false")
	}
	str("health_path", o.HealthPath)
	str("last_site_health_path", o.LastSiteHealthPath)
	num("health_port", int(o.HealthPort))
	dur("health_interval_ms", o.HealthInterval)
	dur("health_timeout_ms", o.HealthTimeout)
	flt("health_jitter", o.HealthJitter)
	list("healthy_statuses", o.HealthyStatuses)
	num("rise", o.Rise)
	num("fall", o.Fall)
	list("eject_statuses", o.EjectStatuses)
	num("eject_after", o.EjectAfter)
	flt("max_ejected_share", o.MaxEjectedShare)
	dur("eject_backoff_base_ms", o.EjectBackoffBase)
	dur("eject_backoff_max_ms", o.EjectBackoffMax)
	list("failure_statuses", o.FailureStatuses)
	dur("failure_penalty_ms", o.FailurePenalty)
	dur("ewma_decay_ms", o.EWMADecay)
	dur("default_rtt_ms", o.DefaultRTT)
	num("max_attempts", o.MaxAttempts)
	list("retry_statuses", o.RetryStatuses)
	num("retry_buffer", o.RetryBuffer)
	flt("retry_budget_ratio", o.RetryBudgetRatio)
	num("retry_budget_min_per_sec", o.RetryBudgetMin)
	str("host_policy", o.HostPolicy)
	dur("attempt_timeout_ms", o.AttemptTimeout)
	dur("connect_timeout_ms", o.ConnectTimeout)
	if o.RRDNS {
		str("rr_dns", "true")
	}
	dur("dns_refresh_ms", o.DNSRefresh)
	dur("pool_idle_timeout_ms", o.PoolIdleTimeout)
	num("pool_max_idle_per_host", o.PoolMaxIdlePerHost)
	num("worker_threads", o.WorkerThreads)
	sb.WriteString(o.Config)
	return sb.String()
}

// Balancer picks endpoints over ordered sites. It is safe for concurrent use; Close frees it.
type Balancer struct {
	mu  sync.RWMutex // Close takes it exclusively: no call may use ptr while it is freed
	ptr *C.sidekick_balancer
}

// New builds a balancer over sites (sidekick SITE syntax, in order of preference, e.g.
// "http://10.0.0.{1...4}:9000") and starts its health probes in the library's threads. Errors
// match ErrConfig when a site or an option is rejected; the message names it.
func New(sites []string, opts Options) (*Balancer, error) {
	csites := C.malloc(C.size_t(len(sites)+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
	defer C.free(csites)
	arr := unsafe.Slice((**C.char)(csites), len(sites)+1)
	for i, s := range sites {
		arr[i] = C.CString(s)
		defer C.free(unsafe.Pointer(arr[i]))
	}
	config := C.CString(opts.config())
	defer C.free(unsafe.Pointer(config))
	r := C.sk_new((**C.char)(csites), C.size_t(len(sites)), config)
	if err := takeError(r.status, r.err); err != nil {
		return nil, err
	}
	b := &Balancer{ptr: r.b}
	runtime.SetFinalizer(b, (*Balancer).Close)
	return b, nil
}

// Close stops the probes and the library's threads (waiting at most 2 s) and frees the
// balancer. Leases already picked stay usable. Calling it again does nothing.
func (b *Balancer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr != nil {
		C.sidekick_balancer_free(b.ptr)
		b.ptr = nil
		runtime.SetFinalizer(b, nil)
	}
	return nil
}

// Ready waits until at least one endpoint is available, at most timeout; the error matches
// ErrNotReady when none became available.
func (b *Balancer) Ready(timeout time.Duration) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ptr == nil {
		return ErrClosed
	}
	var status C.sidekick_status
	cerr := C.sk_ready(b.ptr, C.uint64_t(timeout.Milliseconds()), &status)
	return takeError(status, cerr)
}

// Available reports whether some endpoint is available right now.
func (b *Balancer) Available() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.ptr != nil && bool(C.sidekick_balancer_is_available(b.ptr))
}

// Pick chooses an endpoint for one request. It never blocks; with no endpoint available the
// error matches ErrNoEndpoint. End the lease with Done or Cancel.
func (b *Balancer) Pick() (*Lease, error) {
	return b.PickExcluding(nil)
}

// PickExcluding is Pick, but never one of the endpoints with these ids (Lease.ID): to retry
// a failed request elsewhere.
func (b *Balancer) PickExcluding(ids []uint64) (*Lease, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ptr == nil {
		return nil, ErrClosed
	}
	var r C.sk_pick_result
	if len(ids) == 0 {
		r = C.sk_pick(b.ptr, nil, 0)
	} else {
		// A Go slice of plain integers may be passed for the duration of the call.
		r = C.sk_pick(b.ptr, (*C.uint64_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids)))
	}
	if err := takeError(r.status, r.err); err != nil {
		return nil, err
	}
	return &Lease{ptr: r.lease}, nil
}

// EndpointInfo is a snapshot of one endpoint.
type EndpointInfo struct {
	ID        uint64
	URL       string
	Site      int
	State     string // "up", "down", "unknown", "ejected", "trial"
	Inflight  int
	Requests  uint64
	Failures  uint64
	Ejections uint64
	Latency   time.Duration // -1 before the first sample
	LastError string
}

// Endpoints returns a snapshot of every endpoint, site by site.
func (b *Balancer) Endpoints() ([]EndpointInfo, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ptr == nil {
		return nil, ErrClosed
	}
	r := C.sk_endpoints(b.ptr)
	if err := takeError(r.status, r.err); err != nil {
		return nil, err
	}
	defer C.sidekick_endpoint_list_free(r.list)
	n := int(C.sidekick_endpoint_list_count(r.list))
	out := make([]EndpointInfo, n)
	for i := range out {
		ci := C.size_t(i)
		lat := time.Duration(-1)
		if us := int64(C.sidekick_endpoint_list_latency_us(r.list, ci)); us >= 0 {
			lat = time.Duration(us) * time.Microsecond
		}
		var lastErr string
		if p := C.sidekick_endpoint_list_last_error(r.list, ci); p != nil {
			lastErr = C.GoString(p)
		}
		out[i] = EndpointInfo{
			ID:        uint64(C.sidekick_endpoint_list_id(r.list, ci)),
			URL:       C.GoString(C.sidekick_endpoint_list_url(r.list, ci)),
			Site:      int(C.sidekick_endpoint_list_site(r.list, ci)),
			State:     C.GoString(C.sidekick_endpoint_list_state(r.list, ci)),
			Inflight:  int(C.sidekick_endpoint_list_inflight(r.list, ci)),
			Requests:  uint64(C.sidekick_endpoint_list_requests(r.list, ci)),
			Failures:  uint64(C.sidekick_endpoint_list_failures(r.list, ci)),
			Ejections: uint64(C.sidekick_endpoint_list_ejections(r.list, ci)),
			Latency:   lat,
			LastError: lastErr,
		}
	}
	return out, nil
}

// Lease is one request's claim on an endpoint. End it exactly once with Done or Cancel; until
// then it counts as a request in flight. Not safe for concurrent use; it may outlive the
// Balancer.
type Lease struct {
	ptr *C.sidekick_lease
	url string
	id  uint64
}

// URL is the endpoint to send to, e.g. "http://10.0.0.1:9000" (no trailing slash).
func (l *Lease) URL() string {
	if l.url == "" && l.ptr != nil {
		l.url = C.GoString(C.sidekick_lease_url(l.ptr))
	}
	return l.url
}

// ID identifies the endpoint (for PickExcluding and EndpointInfo.ID).
func (l *Lease) ID() uint64 {
	if l.id == 0 && l.ptr != nil {
		l.id = uint64(C.sidekick_lease_id(l.ptr))
	}
	return l.id
}

// Site is the index of the endpoint's site, 0 for the first.
func (l *Lease) Site() int {
	if l.ptr == nil {
		return 0
	}
	return int(C.sidekick_lease_site(l.ptr))
}

// Done reports how the request went and ends the lease: status is the HTTP status for
// OutcomeStatus, latency your measurement (0: measured by the balancer from the pick).
func (l *Lease) Done(outcome Outcome, status int, latency time.Duration) error {
	if l.ptr == nil {
		return ErrClosed
	}
	us := latency.Microseconds()
	if latency > 0 && us == 0 {
		us = 1 // 0 would mean "measure it for me"
	}
	if status < 0 || status > 0xffff {
		status = 0 // rejected below as an invalid status, and the lease still ends
	}
	st := C.sidekick_lease_finish(l.ptr, C.sidekick_outcome(outcome), C.uint16_t(status), C.uint64_t(us))
	l.ptr = nil
	return takeError(C.sidekick_status(st), nil)
}

// Cancel ends the lease without a report (the request was not sent, or you gave up).
func (l *Lease) Cancel() {
	if l.ptr != nil {
		C.sidekick_lease_free(l.ptr)
		l.ptr = nil
	}
}
