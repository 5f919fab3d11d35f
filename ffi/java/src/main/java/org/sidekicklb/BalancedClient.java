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
import java.util.Arrays;
import java.util.Map;
import java.util.Set;

/**
 * Sends requests with {@link HttpClient} to endpoints picked by a {@link Balancer}, reports each
 * outcome, and retries on another endpoint with {@link Balancer#pickExcluding(long...)}:
 *
 * <ul>
 *   <li>when the connection could not be established (nothing was sent), for any request;
 *   <li>when it broke or timed out after sending, for idempotent methods (GET, HEAD, OPTIONS, PUT,
 *       DELETE), at most {@code maxAttempts} sends.
 * </ul>
 *
 * <p>Note: {@code java.net.http} refuses a custom {@code Host} header unless the JVM runs with
 * {@code -Djdk.httpclient.allowRestrictedHeaders=host}; without it requests carry the endpoint's
 * authority as Host.
 */
public final class BalancedClient {
    private static final Set<String> IDEMPOTENT = Set.of("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE");
    private static final int MAX_CONNECT_ATTEMPTS = 16;

    private final Balancer balancer;
    private final HttpClient http;
    private final int maxAttempts;
    private final Duration timeout;

    /**
     * @param maxAttempts sends of an idempotent request that failed after sending (3 is typical)
     * @param timeout per-attempt deadline for the response head
     */
    public BalancedClient(Balancer balancer, HttpClient http, int maxAttempts, Duration timeout) {
        this.balancer = balancer;
        this.http = http;
        this.maxAttempts = Math.max(1, maxAttempts);
        this.timeout = timeout;
    }

    /**
     * Sends one request.
     *
     * @param pathAndQuery e.g. {@code /bucket/key?x=1}, appended to the endpoint URL
     * @param body the request body, or null for none
     * @throws SidekickException NO_ENDPOINT when no endpoint is available at the first attempt
     * @throws IOException the last attempt's failure when no retry was left
     */
    public HttpResponse<byte[]> send(String method, String pathAndQuery, byte[] body, Map<String, String> headers)
            throws IOException, InterruptedException, SidekickException {
        long[] tried = new long[0];
        IOException last = null;
        int sends = 0;
        for (int attempt = 0; attempt < MAX_CONNECT_ATTEMPTS; attempt++) {
            Lease lease;
            try {
                lease = balancer.pickExcluding(tried);
            } catch (SidekickException e) {
                if (last != null) {
                    throw last; // every endpoint was tried: the last failure says most
                }
                throw e;
            }
            try (lease) {
                tried = Arrays.copyOf(tried, tried.length + 1);
                tried[tried.length - 1] = lease.id();
                HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(lease.url() + pathAndQuery))
                        .timeout(timeout)
                        .method(method, body == null
                                ? HttpRequest.BodyPublishers.noBody()
                                : HttpRequest.BodyPublishers.ofByteArray(body));
                headers.forEach(req::header);
                long start = System.nanoTime();
                try {
                    HttpResponse<byte[]> resp = http.send(req.build(), HttpResponse.BodyHandlers.ofByteArray());
                    lease.finish(Outcome.STATUS, resp.statusCode(), Duration.ofNanos(System.nanoTime() - start));
                    return resp;
                } catch (IOException e) {
                    Duration latency = Duration.ofNanos(System.nanoTime() - start);
                    Outcome outcome = classify(e);
                    lease.finish(outcome, 0, latency);
                    last = e;
                    if (outcome != Outcome.CONNECT) {
                        sends++;
                    }
                    boolean retry = outcome == Outcome.CONNECT
                            || (IDEMPOTENT.contains(method) && sends < maxAttempts);
                    if (!retry) {
                        throw e;
                    }
                }
            }
        }
        throw last;
    }

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
