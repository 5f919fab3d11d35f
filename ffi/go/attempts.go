package sidekick

/*
#include <stdlib.h>
#include "sidekick.h"

typedef struct { sidekick_attempts *a; sidekick_error *err; sidekick_status status; } sk_attempts_result;

static sk_attempts_result sk_attempts_new(const sidekick_balancer *b, const char *method, bool key, bool replayable) {
	sk_attempts_result r = {0};
	r.status = sidekick_attempts_new(b, method, key, replayable, &r.a, &r.err);
	return r;
}

typedef struct { sidekick_lease *lease; sidekick_error *err; sidekick_status status; } sk_first_result;

static sk_first_result sk_attempts_pick(sidekick_attempts *a) {
	sk_first_result r = {0};
	r.status = sidekick_attempts_pick(a, &r.lease, &r.err);
	return r;
}

typedef struct {
	sidekick_decision decision;
	const char *reason;
	sidekick_lease *next;
	sidekick_error *err;
	sidekick_status status;
} sk_decide_result;

static sk_decide_result sk_attempts_decide(sidekick_attempts *a, sidekick_lease *lease, sidekick_outcome outcome, uint16_t status, bool intact) {
	sk_decide_result r = {0};
	r.status = sidekick_attempts_decide(a, lease, outcome, status, intact, &r.decision, &r.reason, &r.next, &r.err);
	return r;
}
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Decision is the engine's answer after an attempt (see Attempts.Decide).
type Decision uint32

const (
	// DecisionDone: hand the answer to the caller; the returned lease is still open: end it
	// with Done (your latency) or Cancel.
	DecisionDone Decision = C.SIDEKICK_DECISION_DONE
	// DecisionRetry: send the request again to the returned lease's endpoint (never one tried
	// before); the previous lease was ended with the outcome.
	DecisionRetry Decision = C.SIDEKICK_DECISION_RETRY
	// DecisionGiveUp: hand the last result (response or error) to the caller; the lease was
	// ended with the outcome.
	DecisionGiveUp Decision = C.SIDEKICK_DECISION_GIVE_UP
)

// Attempts are the attempts of one request under the engine's retry policy: the endpoints
// tried, the attempts made, the request's facts, and the balancer's retry budget (one per
// balancer, shared by every caller). Not safe for concurrent use; Close frees it.
type Attempts struct {
	ptr *C.sidekick_attempts
}

// Attempts starts the attempts of one request and counts it in the retry budget. method is the
// request's method as sent ("GET"); idempotencyKey says the request carries an Idempotency-Key
// header (any method is then idempotent); replayable that its body can be sent again.
func (b *Balancer) Attempts(method string, idempotencyKey, replayable bool) (*Attempts, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ptr == nil {
		return nil, ErrClosed
	}
	cm := C.CString(method)
	defer C.free(unsafe.Pointer(cm))
	r := C.sk_attempts_new(b.ptr, cm, C.bool(idempotencyKey), C.bool(replayable))
	if err := takeError(r.status, r.err); err != nil {
		return nil, err
	}
	a := &Attempts{ptr: r.a}
	runtime.SetFinalizer(a, (*Attempts).Close)
	return a, nil
}

// Pick returns the lease of the first attempt; with no endpoint available the error matches
// ErrNoEndpoint.
func (a *Attempts) Pick() (*Lease, error) {
	if a.ptr == nil {
		return nil, ErrClosed
	}
	r := C.sk_attempts_pick(a.ptr)
	if err := takeError(r.status, r.err); err != nil {
		return nil, err
	}
	return &Lease{ptr: r.lease}, nil
}

// Decide says what to do after the attempt sent to l ended with outcome (status is the HTTP
// status for OutcomeStatus). intact is false when the attempt consumed some of the request
// body. It returns the decision, why (a retry's "connect", "status", "reset" or "timeout"; a
// give-up's "not-idempotent", "not-replayable", "max-attempts", "no-endpoint",
// "budget-exhausted" or "not-retryable"; "" when done) and the lease to use next (nil on a
// give-up). l is ended or handed back in every case.
func (a *Attempts) Decide(l *Lease, outcome Outcome, status int, intact bool) (Decision, string, *Lease, error) {
	if a.ptr == nil || l.ptr == nil {
		l.Cancel()
		return DecisionGiveUp, "", nil, ErrClosed
	}
	if status < 0 || status > 0xffff {
		status = 0 // rejected as an invalid status; the lease still ends
	}
	r := C.sk_attempts_decide(a.ptr, l.ptr, C.sidekick_outcome(outcome), C.uint16_t(status), C.bool(intact))
	l.ptr = nil
	if err := takeError(r.status, r.err); err != nil {
		return DecisionGiveUp, "", nil, err
	}
	var next *Lease
	if r.next != nil {
		next = &Lease{ptr: r.next}
	}
	return Decision(r.decision), C.GoString(r.reason), next, nil
}

// Count is the number of attempts decided so far.
func (a *Attempts) Count() int {
	if a.ptr == nil {
		return 0
	}
	return int(C.sidekick_attempts_count(a.ptr))
}

// Close frees the attempts (leases stay valid). Calling it again does nothing.
func (a *Attempts) Close() {
	if a.ptr != nil {
		C.sidekick_attempts_free(a.ptr)
		a.ptr = nil
		runtime.SetFinalizer(a, nil)
	}
}
