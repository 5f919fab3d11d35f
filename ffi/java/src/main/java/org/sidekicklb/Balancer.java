package org.sidekicklb;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * A client-side load balancer over ordered sites of endpoints (the sidekick C library, through
 * JNA). The JVM keeps its own HTTP client: {@link #pick()} says which endpoint to send a request
 * to and {@link Lease#finish} reports how it went, while health probes run in the library's own
 * threads. Thread-safe; {@link #close()} frees it.
 *
 * <pre>{@code
 * try (Balancer b = Balancer.create(List.of("http://10.0.0.{1...4}:9000"),
 *                                   Map.of("health_path", "/minio/health/ready"))) {
 *     b.awaitReady(Duration.ofSeconds(5));
 *     try (Lease lease = b.pick()) {
 *         // send to lease.url() + "/bucket/key" ...
 *         lease.finish(Outcome.STATUS, 200, Duration.ofMillis(3));
 *     }
 * }
 * }</pre>
 */
public final class Balancer implements AutoCloseable {
    private static final SidekickLibrary LIB = SidekickLibrary.INSTANCE;

    /** Held for reading by every call, for writing by close: no call may use ptr while it is freed. */
    private final ReadWriteLock lock = new ReentrantReadWriteLock();
    private Pointer ptr;

    private Balancer(Pointer ptr) {
        this.ptr = ptr;
    }

    /**
     * Builds a balancer and starts its probes.
     *
     * @param sites sidekick SITE syntax, in order of preference, e.g. {@code http://10.0.0.{1...4}:9000}
     * @param options config keys (the field names of {@code sidekick_options} in sidekick.h, e.g.
     *     {@code health_path}, {@code health_interval_ms}, {@code policy}) and their values
     * @throws SidekickException with status CONFIG naming a bad site, key or value
     */
    public static Balancer create(List<String> sites, Map<String, String> options) throws SidekickException {
        StringBuilder config = new StringBuilder();
        for (Map.Entry<String, String> e : options.entrySet()) {
            if (e.getKey().contains("=") || e.getKey().contains(";") || e.getValue().contains(";")
                    || e.getKey().contains("\n") || e.getValue().contains("\n")) {
                throw new SidekickException(SidekickException.Status.CONFIG,
                        "invalid configuration: option `" + e.getKey() + "` contains a separator");
            }
            config.append(e.getKey()).append('=').append(e.getValue()).append('\n');
        }
        return open(sites.toArray(new String[0]), config.toString());
    }

    /** Builds a balancer from a config string ({@code site=...} entries included). */
    public static Balancer fromConfig(String config) throws SidekickException {
        return open(new String[0], config);
    }

    private static Balancer open(String[] sites, String config) throws SidekickException {
        PointerByReference out = new PointerByReference();
        PointerByReference err = new PointerByReference();
        check(LIB.sidekick_balancer_new_from_config(
                sites.length == 0 ? null : sites, new SidekickLibrary.SizeT(sites.length), config, out, err), err);
        return new Balancer(out.getValue());
    }

    /** Throws the error of a failed call (freeing the C error object). */
    static void check(int status, PointerByReference err) throws SidekickException {
        if (status == SidekickLibrary.SIDEKICK_STATUS_OK) {
            return;
        }
        Pointer e = err.getValue();
        String message = LIB.sidekick_status_str(status);
        if (e != null) {
            message = LIB.sidekick_error_message(e);
            LIB.sidekick_error_free(e);
        }
        throw new SidekickException(SidekickException.Status.of(status), message);
    }

    private Pointer handle() {
        if (ptr == null) {
            throw new IllegalStateException("balancer closed");
        }
        return ptr;
    }

    /** Waits until some endpoint is available, at most {@code timeout} (NOT_READY otherwise). */
    public void awaitReady(Duration timeout) throws SidekickException {
        lock.readLock().lock();
        try {
            PointerByReference err = new PointerByReference();
            check(LIB.sidekick_balancer_ready(handle(), timeout.toMillis(), err), err);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Whether some endpoint is available right now. */
    public boolean isAvailable() {
        lock.readLock().lock();
        try {
            return ptr != null && LIB.sidekick_balancer_is_available(ptr) != 0;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** The number of sites. */
    public int siteCount() {
        lock.readLock().lock();
        try {
            return LIB.sidekick_balancer_site_count(handle()).intValue();
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Picks an endpoint for one request; never blocks (NO_ENDPOINT when none is available). */
    public Lease pick() throws SidekickException {
        return pickExcluding();
    }

    /** Like {@link #pick()}, but never one of these endpoint ids: to retry elsewhere. */
    public Lease pickExcluding(long... ids) throws SidekickException {
        lock.readLock().lock();
        try {
            PointerByReference out = new PointerByReference();
            PointerByReference err = new PointerByReference();
            check(LIB.sidekick_balancer_pick_excluding(handle(), ids.length == 0 ? null : ids,
                    new SidekickLibrary.SizeT(ids.length), out, err), err);
            return new Lease(out.getValue());
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Starts the attempts of one request under the engine's retry policy, counted in this
     * balancer's retry budget (one per balancer, shared by every caller).
     *
     * @param method the request's method as sent, e.g. {@code GET} (case-sensitive)
     * @param idempotencyKey the request carries an {@code Idempotency-Key} header (any method is
     *     then idempotent)
     * @param replayable its body can be sent again (none, or held in memory)
     */
    public Attempts attempts(String method, boolean idempotencyKey, boolean replayable) throws SidekickException {
        lock.readLock().lock();
        try {
            PointerByReference out = new PointerByReference();
            PointerByReference err = new PointerByReference();
            check(LIB.sidekick_attempts_new(handle(), method, (byte) (idempotencyKey ? 1 : 0),
                    (byte) (replayable ? 1 : 0), out, err), err);
            return new Attempts(out.getValue());
        } finally {
            lock.readLock().unlock();
        }
    }

    /** A snapshot of every endpoint, site by site. */
    public List<EndpointInfo> endpoints() throws SidekickException {
        lock.readLock().lock();
        try {
            PointerByReference out = new PointerByReference();
            PointerByReference err = new PointerByReference();
            check(LIB.sidekick_balancer_endpoints(handle(), out, err), err);
            Pointer list = out.getValue();
            try {
                int n = LIB.sidekick_endpoint_list_count(list).intValue();
                List<EndpointInfo> result = new ArrayList<>(n);
                for (int i = 0; i < n; i++) {
                    SidekickLibrary.SizeT at = new SidekickLibrary.SizeT(i);
                    result.add(new EndpointInfo(
                            LIB.sidekick_endpoint_list_id(list, at),
                            LIB.sidekick_endpoint_list_url(list, at),
                            LIB.sidekick_endpoint_list_site(list, at),
                            LIB.sidekick_endpoint_list_state(list, at),
                            LIB.sidekick_endpoint_list_inflight(list, at),
                            LIB.sidekick_endpoint_list_requests(list, at),
                            LIB.sidekick_endpoint_list_failures(list, at),
                            LIB.sidekick_endpoint_list_ejections(list, at),
                            LIB.sidekick_endpoint_list_latency_us(list, at),
                            LIB.sidekick_endpoint_list_last_error(list, at)));
                }
                return result;
            } finally {
                LIB.sidekick_endpoint_list_free(list);
            }
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Stops the probes and the library's threads (waiting at most 2 s). Leases stay usable. */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (ptr != null) {
                LIB.sidekick_balancer_free(ptr);
                ptr = null;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** The version of the native library. */
    public static String nativeVersion() {
        return LIB.sidekick_version();
    }
}
