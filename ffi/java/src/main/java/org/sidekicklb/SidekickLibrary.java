package org.sidekicklb;

import com.sun.jna.IntegerType;
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.PointerByReference;
import java.util.Map;

/**
 * The raw C API of {@code sidekick.h}, as JNA maps it. Use {@link Balancer} instead; this
 * interface is public only so that JNA can implement it.
 *
 * <p>Handles are {@link Pointer}s; {@code size_t} is {@link SizeT}; {@code bool} returns are read
 * as a byte; statuses are {@code int}.
 */
public interface SidekickLibrary extends Library {
    /**
     * The library (libsidekick_ffi.so), as JNA finds it: on {@code jna.library.path} or the
     * system's library path when it is there, else inside this artifact's jar at JNA's resource
     * path ({@code linux-x86-64/libsidekick_ffi.so}). Strings are UTF-8.
     */
    SidekickLibrary INSTANCE = Native.load(
            "sidekick_ffi", SidekickLibrary.class, Map.of(Library.OPTION_STRING_ENCODING, "UTF-8"));

    /** {@code size_t}. */
    final class SizeT extends IntegerType {
        private static final long serialVersionUID = 1L;

        public SizeT() {
            this(0);
        }

        public SizeT(long value) {
            super(Native.SIZE_T_SIZE, value, true);
        }
    }

    int SIDEKICK_STATUS_OK = 0;

    String sidekick_version();

    String sidekick_status_str(int status);

    int sidekick_balancer_new_from_config(
            String[] sites, SizeT nSites, String config, PointerByReference out, PointerByReference err);

    void sidekick_balancer_free(Pointer b);

    int sidekick_balancer_pick(Pointer b, PointerByReference out, PointerByReference err);

    int sidekick_balancer_pick_excluding(
            Pointer b, long[] exclude, SizeT nExclude, PointerByReference out, PointerByReference err);

    int sidekick_balancer_ready(Pointer b, long timeoutMs, PointerByReference err);

    byte sidekick_balancer_is_available(Pointer b);

    SizeT sidekick_balancer_site_count(Pointer b);

    int sidekick_balancer_endpoints(Pointer b, PointerByReference out, PointerByReference err);

    String sidekick_lease_url(Pointer lease);

    long sidekick_lease_id(Pointer lease);

    int sidekick_lease_site(Pointer lease);

    int sidekick_lease_finish(Pointer lease, int outcome, short status, long latencyUs);

    void sidekick_lease_free(Pointer lease);

    /** {@code bool} arguments are passed as a byte (0 or 1). */
    int sidekick_attempts_new(
            Pointer b, String method, byte idempotencyKey, byte replayable, PointerByReference out, PointerByReference err);

    int sidekick_attempts_pick(Pointer a, PointerByReference out, PointerByReference err);

    int sidekick_attempts_decide(
            Pointer a,
            Pointer lease,
            int outcome,
            short status,
            byte intact,
            IntByReference decision,
            PointerByReference reason,
            PointerByReference next,
            PointerByReference err);

    int sidekick_attempts_count(Pointer a);

    void sidekick_attempts_free(Pointer a);

    SizeT sidekick_endpoint_list_count(Pointer list);

    String sidekick_endpoint_list_url(Pointer list, SizeT i);

    long sidekick_endpoint_list_id(Pointer list, SizeT i);

    int sidekick_endpoint_list_site(Pointer list, SizeT i);

    String sidekick_endpoint_list_state(Pointer list, SizeT i);

    int sidekick_endpoint_list_inflight(Pointer list, SizeT i);

    long sidekick_endpoint_list_requests(Pointer list, SizeT i);

    long sidekick_endpoint_list_failures(Pointer list, SizeT i);

    long sidekick_endpoint_list_ejections(Pointer list, SizeT i);

    long sidekick_endpoint_list_latency_us(Pointer list, SizeT i);

    String sidekick_endpoint_list_last_error(Pointer list, SizeT i);

    void sidekick_endpoint_list_free(Pointer list);

    String sidekick_error_message(Pointer err);

    int sidekick_error_status(Pointer err);

    void sidekick_error_free(Pointer err);
}
