package org.sidekicklb;

import com.sun.jna.Pointer;
import java.time.Duration;

/**
 * One request's claim on an endpoint, from {@link Balancer#pick()}. End it exactly once with
 * {@link #finish}; {@link #close()} ends an unfinished lease as cancelled, so try-with-resources
 * never leaks one. Not thread-safe; it may outlive its balancer.
 */
public final class Lease implements AutoCloseable {
    private static final SidekickLibrary LIB = SidekickLibrary.INSTANCE;

    private Pointer ptr;
    private final String url;
    private final long id;
    private final int site;

    Lease(Pointer ptr) {
        this.ptr = ptr;
        this.url = LIB.sidekick_lease_url(ptr);
        this.id = LIB.sidekick_lease_id(ptr);
        this.site = LIB.sidekick_lease_site(ptr);
    }

    /** The endpoint to send to, e.g. {@code http://10.0.0.1:9000} (no trailing slash). */
    public String url() {
        return url;
    }

    /** The endpoint's id, for {@link Balancer#pickExcluding(long...)}. */
    public long id() {
        return id;
    }

    /** The index of the endpoint's site, 0 for the first. */
    public int site() {
        return site;
    }

    /**
     * Report how the request went and end the lease.
     *
     * @param status the HTTP status for {@link Outcome#STATUS} (ignored otherwise)
     * @param latency as measured by the caller; {@code Duration.ZERO} lets the balancer measure
     *     from the pick
     * @throws IllegalStateException when the lease was already ended
     * @throws IllegalArgumentException for a status outside 100-599 with {@link Outcome#STATUS}
     *     (the lease is ended anyway, as cancelled)
     */
    public synchronized void finish(Outcome outcome, int status, Duration latency) {
        if (ptr == null) {
            throw new IllegalStateException("lease already finished");
        }
        long us = latency.toNanos() / 1000;
        if (us == 0 && !latency.isZero()) {
            us = 1; // 0 would mean "measure it for me"
        }
        int st = LIB.sidekick_lease_finish(ptr, outcome.code, (short) Math.max(0, Math.min(status, 0xffff)), us);
        ptr = null;
        if (st != SidekickLibrary.SIDEKICK_STATUS_OK) {
            throw new IllegalArgumentException(
                    "sidekick_lease_finish: " + LIB.sidekick_status_str(st) + " (outcome " + outcome + ", status " + status + ")");
        }
    }

    /** Hands the C handle over (to {@link Attempts#decide}, which ends it); null when ended. */
    synchronized Pointer take() {
        Pointer p = ptr;
        ptr = null;
        return p;
    }

    /** Whether the lease is still open. */
    public synchronized boolean isOpen() {
        return ptr != null;
    }

    /** Ends the lease as cancelled if it was not finished. */
    @Override
    public synchronized void close() {
        if (ptr != null) {
            LIB.sidekick_lease_free(ptr);
            ptr = null;
        }
    }
}
