package org.sidekicklb;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.http.HttpClient;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** Against real HTTP servers on 127.0.0.1. */
class BalancerTest {
    static {
        // Without TCP_NODELAY the JDK server's separate header and body writes meet delayed ACKs:
        // about 40 ms per keep-alive request.
        System.setProperty("sun.net.httpserver.nodelay", "true");
    }

    /** A backend that answers /health and counts every other request. */
    static final class Backend {
        final HttpServer server;
        final ExecutorService pool = Executors.newFixedThreadPool(8);
        final AtomicLong hits = new AtomicLong();
        final String url;

        Backend(long delayMillis) throws IOException {
            server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 64);
            server.createContext("/", exchange -> {
                byte[] body;
                if (exchange.getRequestURI().getPath().equals("/health")) {
                    body = "healthy".getBytes(StandardCharsets.UTF_8);
                } else {
                    int len = exchange.getRequestBody().readAllBytes().length;
                    hits.incrementAndGet();
                    if (delayMillis > 0) {
                        try {
                            Thread.sleep(delayMillis);
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                        }
                    }
                    body = ("ok " + exchange.getRequestMethod() + " " + exchange.getRequestURI() + " len=" + len)
                            .getBytes(StandardCharsets.UTF_8);
                }
                exchange.sendResponseHeaders(200, body.length);
                try (OutputStream os = exchange.getResponseBody()) {
                    os.write(body);
                }
            });
            server.setExecutor(pool);
            server.start();
            url = "http://127.0.0.1:" + server.getAddress().getPort();
        }

        /** Stops at once: the listener closes and open exchanges are cut. */
        void kill() {
            server.stop(0);
            pool.shutdownNow();
        }
    }

    private final List<Backend> backends = new ArrayList<>();
    private final List<Balancer> balancers = new ArrayList<>();

    private Backend backend(long delayMillis) throws IOException {
        Backend b = new Backend(delayMillis);
        backends.add(b);
        return b;
    }

    private Balancer balancer(List<String> sites, Map<String, String> options) throws SidekickException {
        Balancer b = Balancer.create(sites, options);
        balancers.add(b);
        return b;
    }

    @AfterEach
    void stopAll() {
        balancers.forEach(Balancer::close);
        backends.forEach(Backend::kill);
    }

    private static String deadUrl() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
            return "http://127.0.0.1:" + s.getLocalPort();
        }
    }

    /** Waits (at most 10 s) until the endpoint at url is (or, with "out", is no longer "up") in state. */
    private static EndpointInfo waitState(Balancer b, String url, String state) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            for (EndpointInfo e : b.endpoints()) {
                if (e.url().equals(url) && (e.state().equals(state) || (state.equals("out") && !e.state().equals("up")))) {
                    return e;
                }
            }
            if (System.nanoTime() > deadline) {
                fail(url + " never reached " + state + ": " + b.endpoints());
            }
            Thread.sleep(20);
        }
    }

    private static Map<String, String> probes() {
        Map<String, String> o = new HashMap<>();
        o.put("health_path", "/health");
        o.put("health_interval_ms", "100");
        o.put("worker_threads", "1");
        return o;
    }

    @Test
    void pickFinishAndEndpoints() throws Exception {
        Backend b1 = backend(0), b2 = backend(0), b3 = backend(0);
        Map<String, String> options = probes();
        options.put("policy", "round-robin");
        Balancer bal = balancer(List.of(b1.url + "," + b2.url, b3.url), options);
        bal.awaitReady(Duration.ofSeconds(10));
        waitState(bal, b1.url, "up");
        waitState(bal, b2.url, "up");
        waitState(bal, b3.url, "up");
        assertTrue(bal.isAvailable());
        assertEquals(2, bal.siteCount());
        assertFalse(Balancer.nativeVersion().isEmpty());

        Map<String, Integer> seen = new HashMap<>();
        long[] firstSite = new long[2];
        for (int i = 0; i < 100; i++) {
            try (Lease lease = bal.pick()) {
                seen.merge(lease.url(), 1, Integer::sum);
                assertEquals(0, lease.site());
                firstSite[i % 2] = lease.id();
                lease.finish(Outcome.STATUS, 200, Duration.ofMillis(2));
                assertFalse(lease.isOpen());
                assertThrows(IllegalStateException.class, () -> lease.finish(Outcome.SUCCESS, 0, Duration.ZERO));
            }
        }
        assertEquals(Map.of(b1.url, 50, b2.url, 50), seen);
        assertNotEquals(firstSite[0], firstSite[1]);

        try (Lease lease = bal.pickExcluding(firstSite)) {
            assertEquals(b3.url, lease.url());
            assertEquals(1, lease.site());
        } // closed unfinished: cancelled

        Lease bad = bal.pick();
        assertThrows(IllegalArgumentException.class, () -> bad.finish(Outcome.STATUS, 42, Duration.ZERO));
        assertFalse(bad.isOpen());

        EndpointInfo e1 = bal.endpoints().stream().filter(e -> e.url().equals(b1.url)).findFirst().orElseThrow();
        assertEquals(50, e1.requests());
        assertEquals(0, e1.failures());
        assertEquals(0, e1.inflight());
        assertTrue(e1.latencyMicros() > 0, "latency estimate " + e1.latencyMicros());

        Lease outlives = bal.pick();
        bal.close();
        outlives.finish(Outcome.SUCCESS, 0, Duration.ZERO); // a lease may outlive its balancer
        assertThrows(IllegalStateException.class, bal::pick);
        bal.close();
    }

    @Test
    void configErrorsNameTheKeyOrValue() {
        Map<String, String> cases = Map.of(
                "colour", "blue",
                "health_interval_ms", "soon",
                "policy", "fastest",
                "max_ejected_share", "2");
        cases.forEach((key, value) -> {
            SidekickException e = assertThrows(SidekickException.class,
                    () -> balancer(List.of("http://127.0.0.1:1"), Map.of(key, value)));
            assertEquals(SidekickException.Status.CONFIG, e.status());
            assertTrue(e.getMessage().contains(key), e.getMessage());
        });
        SidekickException e = assertThrows(SidekickException.class, () -> balancer(List.of(), Map.of()));
        assertEquals(SidekickException.Status.CONFIG, e.status());
        assertTrue(e.getMessage().contains("site"), e.getMessage());
    }

    @Test
    void notReadyAndNoEndpoint() throws Exception {
        Map<String, String> options = probes();
        options.put("connect_timeout_ms", "500");
        Balancer bal = balancer(List.of(deadUrl()), options);
        SidekickException e = assertThrows(SidekickException.class, () -> bal.awaitReady(Duration.ofMillis(300)));
        assertEquals(SidekickException.Status.NOT_READY, e.status());
        e = assertThrows(SidekickException.class, bal::pick);
        assertEquals(SidekickException.Status.NO_ENDPOINT, e.status());
    }

    @Test
    void connectFailuresAreRetriedOnAnotherEndpoint() throws Exception {
        Backend live = backend(0);
        String dead = deadUrl();
        Balancer bal = balancer(List.of(dead + "," + live.url), Map.of(
                "health_check", "off", "policy", "round-robin", "max_ejected_share", "1",
                "eject_backoff_base_ms", "60000", "eject_backoff_max_ms", "60000"));
        BalancedClient client = new BalancedClient(
                bal, HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build(), Duration.ofSeconds(5));
        for (int i = 0; i < 20; i++) {
            // POST is not idempotent: only the connect failure (nothing sent) may be retried.
            HttpResponse<byte[]> resp = client.send("POST", "/upload", "payload".getBytes(StandardCharsets.UTF_8), Map.of());
            assertEquals(200, resp.statusCode());
            assertEquals("ok POST /upload len=7", new String(resp.body(), StandardCharsets.UTF_8));
        }
        EndpointInfo d = bal.endpoints().stream().filter(e -> e.url().equals(dead)).findFirst().orElseThrow();
        assertEquals("ejected", d.state());
        assertTrue(d.failures() >= 1);
    }

    @Test
    void killOneOfThreeBackendsUnderLoadWithoutFailures() throws Exception {
        final int workers = 8, perWorker = 250;
        Backend b0 = backend(1), b1 = backend(1), b2 = backend(1);
        Map<String, String> options = probes();
        options.put("worker_threads", "2");
        options.put("connect_timeout_ms", "1000");
        // Only the traffic may take the killed backend out: with the 100 ms probes it was
        // sometimes marked down before any request met it (no failed attempt, so the retry
        // path this test is about did not run). One probe at the start, then none for a
        // minute; round-robin gives the killed backend its turn within three requests.
        options.put("health_interval_ms", "60000");
        options.put("policy", "round-robin");
        Balancer bal = balancer(List.of(b0.url + "," + b1.url + "," + b2.url), options);
        bal.awaitReady(Duration.ofSeconds(10));
        for (Backend b : List.of(b0, b1, b2)) {
            waitState(bal, b.url, "up");
        }
        HttpClient http = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(2))
                .build();
        BalancedClient client = new BalancedClient(bal, http, Duration.ofSeconds(10));

        AtomicInteger done = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        AtomicReference<Throwable> firstError = new AtomicReference<>();
        AtomicLong hitsAtKill = new AtomicLong(-1);
        ExecutorService pool = Executors.newFixedThreadPool(workers);
        List<Future<?>> futures = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            final int worker = w;
            futures.add(pool.submit(() -> {
                for (int i = 0; i < perWorker; i++) {
                    try {
                        HttpResponse<byte[]> resp = client.send("GET", "/w" + worker + "/r" + i, null, Map.of());
                        if (resp.statusCode() != 200) {
                            throw new IOException("status " + resp.statusCode());
                        }
                    } catch (Exception e) {
                        failed.incrementAndGet();
                        firstError.compareAndSet(null, e);
                    }
                    if (done.incrementAndGet() == workers * perWorker / 3) {
                        hitsAtKill.set(b1.hits.get());
                        b1.kill();
                    }
                }
            }));
        }
        for (Future<?> f : futures) {
            f.get(120, TimeUnit.SECONDS);
        }
        pool.shutdown();
        assertTrue(hitsAtKill.get() >= 0, "the backend was killed");
        assertEquals(0, failed.get(), "failed requests; first: " + firstError.get());
        EndpointInfo killed = waitState(bal, b1.url, "out");
        System.out.printf("kill test: %d requests, 0 failed; killed backend served %d before the kill, %d attempts"
                        + " failed on it and were retried, now %s; others served %d and %d%n",
                workers * perWorker, hitsAtKill.get(), killed.failures(), killed.state(), b0.hits.get(), b2.hits.get());
        for (EndpointInfo e : bal.endpoints()) {
            if (!e.url().equals(b1.url)) {
                assertEquals("up", e.state(), e.url());
            }
        }
        // Requests did fail on the killed backend and were retried elsewhere: the path under test ran.
        assertTrue(killed.failures() >= 1, "failed attempts on the killed backend: " + killed);
    }
}
