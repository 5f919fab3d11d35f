package org.sidekicklb;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.net.http.HttpClient;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The shared attempt-policy vectors ({@code tests/vectors/attempt_policy.txt} at the repository
 * root), through {@link Balancer#attempts}, {@link Attempts#pick()} and {@link Attempts#decide}.
 */
class AttemptsTest {
    private static final Path VECTORS = Path.of("..", "..", "tests", "vectors", "attempt_policy.txt");

    private static final Map<String, Outcome> OUTCOMES = Map.of(
            "success", Outcome.SUCCESS, "connect", Outcome.CONNECT, "reset", Outcome.RESET,
            "timeout", Outcome.TIMEOUT, "failed", Outcome.FAILED, "cancelled", Outcome.CANCELLED);

    @TestFactory
    Stream<DynamicTest> attemptPolicyVectors() throws Exception {
        List<String[]> cases = new ArrayList<>();
        for (String line : Files.readAllLines(VECTORS, StandardCharsets.UTF_8)) {
            String t = line.trim();
            if (t.isEmpty() || t.startsWith("#")) {
                continue;
            }
            String[] f = t.split("\\s+");
            assertTrue(f.length >= 8, "case " + f[0] + ": " + f.length + " fields, need 8 or more");
            cases.add(f);
        }
        assertTrue(!cases.isEmpty(), "no vector found");
        System.out.printf("attempt policy vectors: %d cases%n", cases.size());
        return cases.stream().map(f -> DynamicTest.dynamicTest(f[0], () -> run(f)));
    }

    private static void run(String[] f) throws Exception {
        StringBuilder options = new StringBuilder("health_check=false\nmax_attempts=" + f[2] + "\n");
        if (f[3].equals("exhausted")) {
            options.append("retry_budget_ratio=0\nretry_budget_min_per_sec=0\n");
        }
        try (Balancer b = Balancer.fromConfig("site=" + f[1] + "\n" + options);
                Attempts a = b.attempts(f[4], f[5].equals("1"), f[6].equals("1"))) {
            Lease lease = a.pick();
            String[] steps = Arrays.copyOfRange(f, 7, f.length);
            for (int i = 0; i < steps.length; i++) {
                String[] kv = steps[i].split("=", 2);
                String[] oi = kv[0].split("/", 2);
                assertEquals(2, kv.length, "step " + steps[i]);
                assertEquals(2, oi.length, "step " + steps[i]);
                Outcome outcome = OUTCOMES.get(oi[0]);
                int status = 0;
                if (outcome == null) {
                    outcome = Outcome.STATUS;
                    status = Integer.parseInt(oi[0]);
                }
                assertNotNull(lease, "step " + (i + 1) + ": no lease left");
                Attempts.Next next = a.decide(lease, outcome, status, oi[1].equals("1"));
                String got = switch (next.decision()) {
                    case DONE -> "done";
                    case RETRY -> "retry:" + next.reason();
                    case GIVE_UP -> "giveup:" + next.reason();
                };
                assertEquals(kv[1], got, f[0] + ": step " + (i + 1));
                lease = null;
                switch (next.decision()) {
                    case RETRY -> lease = next.lease();
                    case DONE -> next.lease().finish(outcome, status, java.time.Duration.ZERO);
                    case GIVE_UP -> assertNull(next.lease(), "a give-up returned a lease");
                }
            }
            assertNull(lease, "the steps left a retry open");
            assertEquals(steps.length, a.count());
        }
    }

    /**
     * BalancedClient follows the engine's decisions: a 503 goes to the next site for a GET and for
     * a POST with an Idempotency-Key, and comes back as it is for a plain POST.
     */
    @Test
    void balancedClientFollowsTheEngineOnStatuses() throws Exception {
        AtomicInteger badHits = new AtomicInteger();
        HttpServer bad = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 16);
        bad.createContext("/", exchange -> {
            exchange.getRequestBody().readAllBytes();
            badHits.incrementAndGet();
            exchange.sendResponseHeaders(503, -1);
            exchange.close();
        });
        bad.start();
        BalancerTest.Backend good = new BalancerTest.Backend(0);
        String badUrl = "http://127.0.0.1:" + bad.getAddress().getPort();
        try (Balancer b = Balancer.create(List.of(badUrl, good.url), Map.of("health_check", "false"))) {
            BalancedClient client = new BalancedClient(
                    b, HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build(), Duration.ofSeconds(5));
            byte[] payload = "payload".getBytes(StandardCharsets.UTF_8);
            HttpResponse<byte[]> get = client.send("GET", "/obj", null, Map.of());
            assertEquals(200, get.statusCode());
            assertEquals(503, client.send("POST", "/obj", payload, Map.of()).statusCode());
            HttpResponse<byte[]> keyed = client.send("POST", "/obj", payload, Map.of("Idempotency-Key", "k-1"));
            assertEquals(200, keyed.statusCode());
            assertEquals("ok POST /obj len=7", new String(keyed.body(), StandardCharsets.UTF_8));
            assertEquals(3, badHits.get());
            assertEquals(2, good.hits.get());
        } finally {
            bad.stop(0);
            good.kill();
        }
    }
}
