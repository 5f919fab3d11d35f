package org.sidekicklb;

/**
 * A snapshot of one endpoint.
 *
 * @param state "up", "down", "unknown", "ejected" or "trial"
 * @param latencyMicros the latency estimate, -1 before the first sample
 * @param lastError the last probe or request error, or null
 */
public record EndpointInfo(
        long id,
        String url,
        int site,
        String state,
        int inflight,
        long requests,
        long failures,
        long ejections,
        long latencyMicros,
        String lastError) {}
