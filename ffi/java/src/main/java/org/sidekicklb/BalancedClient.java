package org.sidekicklb;

import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.time.Duration;
import java.util.Map;

/**
 * Sends requests with {@link HttpClient} to endpoints picked by a {@link Balancer}, reports each
 * outcome, and retries on another endpoint as the engine's attempt policy decides ({@link
 * Balancer#attempts}): a connection that could not be established for any request; a reset, a
 * timeout or one of the balancer's retry statuses for idempotent requests (GET, HEAD, OPTIONS,
 * TRACE, PUT, DELETE, or with an {@code Idempotency-Key} header), within the balancer's {@code
 * max_attempts} and retry budget. This class only translates {@code java.net.http}'s errors into
 * the engine's outcomes.
 *
 * <p>Note: {@code java.net.http} refuses a custom {@code Host} header unless the JVM runs with
 * {@code -Djdk.httpclient.allowRestrictedHeaders=host}; without it requests carry the endpoint's
 * authority as Host.
 */
public final class BalancedClient {
    private final Balancer balancer;
    private final HttpClient http;
    private final Duration timeout;

    /**
     * @param timeout per-attempt deadline for the response head
     */
    public BalancedClient(Balancer balancer, HttpClient http, Duration timeout) {
        this.balancer = balancer;
        this.http = http;
        this.timeout = timeout;
    }

    /**
     * Sends one request.
     *
     * @param pathAndQuery e.g. {@code /bucket/key?x=1}, appended to the endpoint URL
     * @param body the request body (held in memory, so always replayable), or null for none
     * @throws SidekickException NO_ENDPOINT when no endpoint is available at the first attempt
     * @throws IOException the last attempt's failure when no retry was left
     */
    public HttpResponse<byte[]> send(String method, String pathAndQuery, byte[] body, Map<String, String> headers)
            throws IOException, InterruptedException, SidekickException {
        boolean key = headers.keySet().stream()
                .anyMatch(h -> h.equalsIgnoreCase("Idempotency-Key") || h.equalsIgnoreCase("X-Idempotency-Key"));
        try (Attempts attempts = balancer.attempts(method, key, true)) {
            Lease lease = attempts.pick();
            // Bounded by the engine: every endpoint at most once, at most 16 attempts.
            while (true) {
                try (Lease current = lease) {
                    HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(current.url() + pathAndQuery))
                            .timeout(timeout)
                            .method(method, body == null
                                    ? HttpRequest.BodyPublishers.noBody()
                                    : HttpRequest.BodyPublishers.ofByteArray(body));
                    headers.forEach(req::header);
                    long start = System.nanoTime();
                    HttpResponse<byte[]> resp = null;
                    IOException failure = null;
                    Outcome outcome = Outcome.STATUS;
                    int status = 0;
                    try {
                        resp = http.send(req.build(), HttpResponse.BodyHandlers.ofByteArray());
                        status = resp.statusCode();
                    } catch (IOException e) {
                        failure = e;
                        outcome = classify(e);
                    }
                    Duration latency = Duration.ofNanos(System.nanoTime() - start);
                    Attempts.Next next = attempts.decide(current, outcome, status, true);
                    if (next.decision() == Attempts.Decision.RETRY) {
                        lease = next.lease();
                        continue;
                    }
                    if (next.decision() == Attempts.Decision.DONE) {
                        next.lease().finish(outcome, status, latency);
                    }
                    if (failure != null) {
                        throw failure;
                    }
                    return resp;
                }
            }
        }
    }

    /** Translates a {@code java.net.http} failure into the engine's outcome. */
    private static Outcome classify(IOException e) {
        if (e instanceof ConnectException || e instanceof HttpConnectTimeoutException
                || e.getCause() instanceof ConnectException) {
            return Outcome.CONNECT;
        }
        if (e instanceof HttpTimeoutException) {
            return Outcome.TIMEOUT;
        }
        return Outcome.RESET;
    }
}
