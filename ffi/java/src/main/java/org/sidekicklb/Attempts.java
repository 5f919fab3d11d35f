package org.sidekicklb;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.PointerByReference;

/**
 * The attempts of one request under the engine's retry policy, from {@link
 * Balancer#attempts(String, boolean, boolean)}: {@link #pick()} the first lease, send, then follow
 * {@link #decide} after each attempt. The rules (idempotency, replayable bodies, {@code
 * max_attempts}, {@code retry_statuses}, at most 16 attempts) and the retry budget are the
 * engine's. Not thread-safe; {@link #close()} frees it.
 */
public final class Attempts implements AutoCloseable {
    private static final SidekickLibrary LIB = SidekickLibrary.INSTANCE;

    /** The engine's answer after an attempt ({@code SIDEKICK_DECISION_*}). */
    public enum Decision {
        /** Hand the answer to the caller; the lease is still open: finish it. */
        DONE,
        /** Send again to the new lease's endpoint; the previous lease was finished. */
        RETRY,
        /** Hand the last result to the caller; the lease was finished. */
        GIVE_UP;

        static Decision of(int code) {
            switch (code) {
                case 0:
                    return DONE;
                case 1:
                    return RETRY;
                default:
                    return GIVE_UP;
            }
        }
    }

    /**
     * A decision, why ({@code connect}, {@code status}, {@code reset}, {@code timeout} for a retry;
     * {@code not-idempotent}, {@code not-replayable}, {@code max-attempts}, {@code no-endpoint},
     * {@code budget-exhausted}, {@code not-retryable} for a give-up; empty when done), and the
     * lease to use next (null on a give-up).
     */
    public record Next(Decision decision, String reason, Lease lease) {}

    private Pointer ptr;

    Attempts(Pointer ptr) {
        this.ptr = ptr;
    }

    private Pointer handle() {
        if (ptr == null) {
            throw new IllegalStateException("attempts closed");
        }
        return ptr;
    }

    /** The lease of the first attempt (NO_ENDPOINT when none is available). */
    public synchronized Lease pick() throws SidekickException {
        PointerByReference out = new PointerByReference();
        PointerByReference err = new PointerByReference();
        Balancer.check(LIB.sidekick_attempts_pick(handle(), out, err), err);
        return new Lease(out.getValue());
    }

    /**
     * What next after the attempt sent to {@code lease} ended with {@code outcome}; {@code lease}
     * is ended or handed back in every case.
     *
     * @param status the HTTP status for {@link Outcome#STATUS}
     * @param intact the attempt consumed none of the request body
     * @throws IllegalStateException when the lease was already ended
     */
    public synchronized Next decide(Lease lease, Outcome outcome, int status, boolean intact)
            throws SidekickException {
        Pointer a = handle();
        Pointer l = lease.take();
        if (l == null) {
            throw new IllegalStateException("lease already finished");
        }
        IntByReference decision = new IntByReference();
        PointerByReference reason = new PointerByReference();
        PointerByReference next = new PointerByReference();
        PointerByReference err = new PointerByReference();
        Balancer.check(LIB.sidekick_attempts_decide(a, l, outcome.code,
                (short) Math.max(0, Math.min(status, 0xffff)), (byte) (intact ? 1 : 0),
                decision, reason, next, err), err);
        Pointer n = next.getValue();
        Pointer r = reason.getValue();
        return new Next(Decision.of(decision.getValue()), r == null ? "" : r.getString(0, "UTF-8"),
                n == null ? null : new Lease(n));
    }

    /** The attempts decided so far. */
    public synchronized int count() {
        return ptr == null ? 0 : LIB.sidekick_attempts_count(ptr);
    }

    /** Frees the attempts (its leases stay valid). */
    @Override
    public synchronized void close() {
        if (ptr != null) {
            LIB.sidekick_attempts_free(ptr);
            ptr = null;
        }
    }
}
