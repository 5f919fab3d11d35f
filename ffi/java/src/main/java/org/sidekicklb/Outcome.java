package org.sidekicklb;

/** How a request sent to a leased endpoint ended ({@code SIDEKICK_OUTCOME_*}). */
public enum Outcome {
    /** It worked (the status is ignored). */
    SUCCESS(0),
    /** A response arrived with this HTTP status; 5xx and 429 count as failures by default. */
    STATUS(1),
    /** The connection could not be established: nothing was sent. Ejects the endpoint. */
    CONNECT(2),
    /** The connection broke after the request was sent. Ejects the endpoint. */
    RESET(3),
    /** No response in time. Ejects the endpoint. */
    TIMEOUT(4),
    /** Failed for a reason that says nothing about the connection. */
    FAILED(5),
    /** The caller gave up; nothing is learnt. */
    CANCELLED(6);

    final int code;

    Outcome(int code) {
        this.code = code;
    }
}
