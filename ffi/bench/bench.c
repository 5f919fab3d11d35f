/*
 * Cost of one sidekick_balancer_pick + sidekick_lease_finish pair through the C ABI, in ns.
 *
 *   bench [PAIRS]      (default 2000000; at most 100000000)
 *
 * Same setup as the Rust figure (bench/pick_finish.rs) and the Go one (BenchmarkPickDone): one
 * site of 4 endpoints, probes off (nothing is contacted), default policy (p2c), one thread,
 * finished as SIDEKICK_OUTCOME_SUCCESS with the latency measured by the balancer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sidekick.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Runs `pairs` pick + finish pairs; with `url` set, also reads each lease's URL. */
static int run(const sidekick_balancer *b, long pairs, int url) {
    for (long i = 0; i < pairs; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(b, &lease, NULL) != SIDEKICK_STATUS_OK) {
            return 1;
        }
        if (url && sidekick_lease_url(lease) == NULL) {
            return 1;
        }
        sidekick_lease_finish(lease, SIDEKICK_OUTCOME_SUCCESS, 0, 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 2000000;
    if (pairs < 1 || pairs > 100000000) {
        fprintf(stderr, "PAIRS must be within 1 and 100000000\n");
        return 2;
    }
    const char *sites[] = {"http://127.0.0.1:{10001...10004}"};
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    if (sidekick_balancer_new_from_config(sites, 1, "health_check=off", &b, &err) !=
        SIDEKICK_STATUS_OK) {
        fprintf(stderr, "bench: %s\n", sidekick_error_message(err));
        sidekick_error_free(err);
        return 1;
    }
    int rc = run(b, pairs / 10, 0); /* warm-up */
    double t0 = now_ns();
    rc |= run(b, pairs, 0);
    double t1 = now_ns();
    rc |= run(b, pairs, 1);
    double t2 = now_ns();
    sidekick_balancer_free(b);
    if (rc != 0) {
        fprintf(stderr, "bench: a pick failed\n");
        return 1;
    }
    printf("C   pick+finish:           %6.1f ns/pair (%ld pairs, 4 endpoints, p2c, 1 thread)\n",
           (t1 - t0) / (double)pairs, pairs);
    printf("C   pick+lease_url+finish: %6.1f ns/pair\n", (t2 - t1) / (double)pairs);
    return 0;
}
