package example;

import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.sidekicklb.BalancedClient;
import org.sidekicklb.Balancer;

/**
 * A Java user's program, built outside the repository by ffi/test.sh against the installed
 * sidekick-jna artifact and nothing else (no library path): {@code Consumer SITE [SITE...]} sends
 * 20 GETs through {@link BalancedClient} to the backends of ffi/tests/server.py, checks every
 * answer and prints which backends served them and where the native library came from. Exits 1
 * on the first wrong answer.
 */
public final class Consumer {
    private Consumer() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            System.err.println("usage: Consumer SITE [SITE...]");
            System.exit(2);
        }
        Map<String, Integer> served = new TreeMap<>();
        try (Balancer b = Balancer.create(List.of(args), Map.of("health_path", "/health", "health_interval_ms", "200"))) {
            b.awaitReady(Duration.ofSeconds(10));
            BalancedClient client = new BalancedClient(b, HttpClient.newHttpClient(), Duration.ofSeconds(10));
            for (int i = 0; i < 20; i++) {
                HttpResponse<byte[]> resp = client.send("GET", "/key/" + i, null, Map.of());
                String body = new String(resp.body(), StandardCharsets.UTF_8);
                String want = "ok GET /key/" + i + " ";
                if (resp.statusCode() != 200 || !body.startsWith(want)) {
                    System.err.printf("request %d: %d \"%s\", want 200 \"%s...\"%n", i, resp.statusCode(), body, want);
                    System.exit(1);
                }
                served.merge(resp.headers().firstValue("X-Backend").orElse("?"), 1, Integer::sum);
            }
        }
        URL lib = Balancer.class.getResource("/linux-x86-64/libsidekick_ffi.so");
        System.out.println("20 GETs through BalancedClient, served by " + served + "; native library resource: " + lib);
    }
}
