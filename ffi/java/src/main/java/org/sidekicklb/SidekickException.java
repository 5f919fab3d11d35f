package org.sidekicklb;

/** A failed call of the C API: its status code and the library's message. */
public class SidekickException extends Exception {
    private static final long serialVersionUID = 1L;

    /** The status codes of {@code sidekick_status}. */
    public enum Status {
        NULL_ARGUMENT(1), INVALID_ARGUMENT(2), CONFIG(3), NO_ENDPOINT(4), NOT_READY(5), CONNECT(6),
        TIMEOUT(7), REQUEST(8), BODY(9), RUNTIME(10), PANIC(99), UNKNOWN(-1);

        final int code;

        Status(int code) {
            this.code = code;
        }

        static Status of(int code) {
            for (Status s : values()) {
                if (s.code == code) {
                    return s;
                }
            }
            return UNKNOWN;
        }
    }

    private final Status status;

    SidekickException(Status status, String message) {
        super(message);
        this.status = status;
    }

    /** Which kind of failure this is. */
    public Status status() {
        return status;
    }
}
