/*
 * Exercises every function of sidekick.h against real local backends, including the NULL,
 * bad-argument and bad-config paths. Run by ffi/test.sh under valgrind:
 *
 *   test_sidekick LIVE_PORT_1 LIVE_PORT_2 DEAD_PORT RESET_PORT
 *
 * LIVE_PORT_* are tests/server.py backends on 127.0.0.1; nothing listens on DEAD_PORT;
 * RESET_PORT is a `tests/server.py --reset` backend, which resets every connection.
 * Prints one line per check and exits 1 if any failed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sidekick.h"

static int checks, failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        checks++;                                                                                  \
        if (cond) {                                                                                \
            printf("ok %d - ", checks);                                                            \
        } else {                                                                                   \
            failures++;                                                                            \
            printf("FAILED %d (%s:%d: %s) - ", checks, __FILE__, __LINE__, #cond);                 \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

/* The status is `want`, and the error object (if any) says so and contains `needle`; frees it. */
static void check_failure(const char *what, sidekick_status got, sidekick_status want,
                          sidekick_error **err, const char *needle) {
    CHECK(got == want, "%s: status %d (%s), want %d", what, got, sidekick_status_str(got), want);
    if (err == NULL) {
        return;
    }
    CHECK(*err != NULL, "%s: an error object is returned", what);
    if (*err == NULL) {
        return;
    }
    const char *msg = sidekick_error_message(*err);
    CHECK(msg != NULL && (needle == NULL || strstr(msg, needle) != NULL),
          "%s: message names `%s`: %s", what, needle ? needle : "", msg ? msg : "(null)");
    CHECK(sidekick_error_status(*err) == want, "%s: the error object carries the status", what);
    sidekick_error_free(*err);
    *err = NULL;
}

/* ----- events ----- */

static atomic_int events_up, events_down, events_ejected, events_retry, events_other;
static atomic_int events_added, events_removed;

static void on_event(void *user_data, const sidekick_event *ev) {
    atomic_int *calls = user_data;
    atomic_fetch_add(calls, 1);
    if (ev == NULL || ev->endpoint == NULL || strncmp(ev->endpoint, "http://", 7) != 0) {
        atomic_fetch_add(&events_other, 1000); /* makes the check below fail */
        return;
    }
    switch (ev->kind) {
    case SIDEKICK_EVENT_KIND_UP:
        atomic_fetch_add(&events_up, 1);
        break;
    case SIDEKICK_EVENT_KIND_DOWN:
        atomic_fetch_add(&events_down, 1);
        break;
    case SIDEKICK_EVENT_KIND_EJECTED:
        atomic_fetch_add(&events_ejected, 1);
        break;
    case SIDEKICK_EVENT_KIND_RETRY:
        atomic_fetch_add(&events_retry, 1);
        break;
    case SIDEKICK_EVENT_KIND_ADDED:
        atomic_fetch_add(&events_added, 1);
        break;
    case SIDEKICK_EVENT_KIND_REMOVED:
        atomic_fetch_add(&events_removed, 1);
        break;
    default:
        atomic_fetch_add(&events_other, 1);
        break;
    }
}

/* ----- concurrent picks ----- */

#define THREADS 4
#define PICKS_PER_THREAD 5000

struct worker {
    const sidekick_balancer *b;
    int errors;
};

static void *pick_worker(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < PICKS_PER_THREAD; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(w->b, &lease, NULL) != SIDEKICK_STATUS_OK) {
            w->errors++;
            continue;
        }
        if (sidekick_lease_url(lease) == NULL) {
            w->errors++;
        }
        if (i % 100 == 0) {
            sidekick_endpoint_list *list = NULL;
            if (sidekick_balancer_endpoints(w->b, &list, NULL) != SIDEKICK_STATUS_OK) {
                w->errors++;
            }
            sidekick_endpoint_list_free(list);
        }
        if (sidekick_lease_finish(lease, SIDEKICK_OUTCOME_STATUS, 200, 800) != SIDEKICK_STATUS_OK) {
            w->errors++;
        }
    }
    return NULL;
}

/* ----- the tests ----- */

static void test_statics(void) {
    const char *v = sidekick_version();
    CHECK(v != NULL && strchr(v, '.') != NULL, "sidekick_version: %s", v ? v : "(null)");
    CHECK(strcmp(sidekick_status_str(SIDEKICK_STATUS_OK), "ok") == 0, "status_str(OK)");
    CHECK(strcmp(sidekick_status_str(SIDEKICK_STATUS_NO_ENDPOINT), "no endpoint available") == 0,
          "status_str(NO_ENDPOINT)");
    CHECK(strcmp(sidekick_status_str(12345), "unknown status") == 0, "status_str(unknown)");
    CHECK(sidekick_status_str(SIDEKICK_STATUS_PANIC) != NULL, "status_str(PANIC)");
}

static void test_options_and_config_errors(const char *live) {
    sidekick_error *err = NULL;
    sidekick_balancer *b = NULL;
    sidekick_options o;

    CHECK(sidekick_options_init(NULL) == SIDEKICK_STATUS_NULL_ARGUMENT, "options_init(NULL)");
    CHECK(sidekick_options_init(&o) == SIDEKICK_STATUS_OK, "options_init");
    CHECK(o.version == SIDEKICK_OPTIONS_VERSION && o.health_check && o.health_interval_ms == 5000 &&
              o.health_timeout_ms == 10000 && o.health_jitter == 0.2 && o.rise == 1 &&
              o.fall == 1 && o.eject_after == 5 && o.max_ejected_share == 0.5 &&
              o.eject_backoff_base_ms == 1000 && o.eject_backoff_max_ms == 60000 &&
              o.failure_penalty_ms == 1000 && o.ewma_decay_ms == 10000 &&
              o.default_rtt_ms == 10 && o.max_attempts == 3 && o.retry_buffer == 65536 &&
              o.retry_budget_ratio == 0.2 && o.retry_budget_min_per_sec == 10 &&
              o.attempt_timeout_ms == 0 && o.connect_timeout_ms == 3000 && !o.rr_dns &&
              o.dns_refresh_ms == 30000 && o.pool_idle_timeout_ms == 90000 &&
              o.pool_max_idle_per_host == 1024 && o.worker_threads == 2 && o.policy == NULL &&
              o.health_path == NULL && o.healthy_statuses == NULL && o.on_event == NULL &&
              !o.health_optimistic,
          "options_init writes every documented default");

    const char *sites[] = {live};
    const char *null_site[] = {NULL};
    sidekick_status st;

    st = sidekick_balancer_new(sites, 1, NULL, NULL, &err);
    check_failure("new(out=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "out");
    st = sidekick_balancer_new(NULL, 1, NULL, &b, &err);
    check_failure("new(sites=NULL, n=1)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "sites");
    st = sidekick_balancer_new(null_site, 1, NULL, &b, &err);
    check_failure("new(sites[0]=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "sites[0]");
    st = sidekick_balancer_new(NULL, 0, NULL, &b, &err);
    check_failure("new(no site)", st, SIDEKICK_STATUS_CONFIG, &err, "site");
    const char *bad_site[] = {"ftp://127.0.0.1:{1...}"};
    st = sidekick_balancer_new(bad_site, 1, NULL, &b, &err);
    check_failure("new(bad site)", st, SIDEKICK_STATUS_CONFIG, &err, "site 1");

    sidekick_options bad = o;
    bad.health_jitter = 20.0;
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(health_jitter=20)", st, SIDEKICK_STATUS_CONFIG, &err, "health_jitter");
    bad = o;
    bad.version = 0;
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(version=0)", st, SIDEKICK_STATUS_CONFIG, &err, "sidekick_options_init");
    bad = o;
    bad.policy = "fastest";
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(policy=fastest)", st, SIDEKICK_STATUS_CONFIG, &err, "fastest");
    bad = o;
    bad.host_policy = "drop";
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(host_policy=drop)", st, SIDEKICK_STATUS_CONFIG, &err, "host_policy");
    bad = o;
    bad.eject_statuses_len = 3; /* NULL list with a length */
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(eject_statuses NULL, len 3)", st, SIDEKICK_STATUS_CONFIG, &err,
                  "eject_statuses");
    bad = o;
    uint16_t not_statuses[] = {200, 700};
    bad.healthy_statuses = not_statuses;
    bad.healthy_statuses_len = 2;
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(healthy_statuses has 700)", st, SIDEKICK_STATUS_CONFIG, &err, "700");
    bad = o;
    bad.worker_threads = 99;
    st = sidekick_balancer_new(sites, 1, &bad, &b, &err);
    check_failure("new(worker_threads=99)", st, SIDEKICK_STATUS_CONFIG, &err, "worker_threads");

    st = sidekick_balancer_new_from_config(sites, 1, "health_interval_ms=soon", &b, &err);
    check_failure("config(bad value)", st, SIDEKICK_STATUS_CONFIG, &err, "soon");
    st = sidekick_balancer_new_from_config(sites, 1, "colour=blue", &b, &err);
    check_failure("config(unknown key)", st, SIDEKICK_STATUS_CONFIG, &err, "colour");
    st = sidekick_balancer_new_from_config(sites, 1, "max_ejected_share=2", &b, &err);
    check_failure("config(engine check)", st, SIDEKICK_STATUS_CONFIG, &err, "max_ejected_share");
    st = sidekick_balancer_new_from_config(NULL, 0, "policy=least", &b, &err);
    check_failure("config(no site)", st, SIDEKICK_STATUS_CONFIG, &err, "site");
    st = sidekick_balancer_new_from_config(sites, 1, "rise", &b, &err);
    check_failure("config(no =)", st, SIDEKICK_STATUS_CONFIG, &err, "key=value");
    st = sidekick_balancer_new_from_config(sites, 1, "", NULL, &err);
    check_failure("config(out=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "out");
    /* err may be NULL: only the status comes back. */
    st = sidekick_balancer_new_from_config(sites, 1, "colour=blue", &b, NULL);
    check_failure("config(err=NULL)", st, SIDEKICK_STATUS_CONFIG, NULL, NULL);
    CHECK(b == NULL, "no balancer is written on failure");

    /* The error accessors' NULL paths. */
    CHECK(sidekick_error_message(NULL) == NULL, "error_message(NULL)");
    CHECK(sidekick_error_status(NULL) == SIDEKICK_STATUS_NULL_ARGUMENT, "error_status(NULL)");
    sidekick_error_free(NULL);
}

static int find_endpoint(const sidekick_endpoint_list *list, const char *url) {
    for (size_t i = 0; i < sidekick_endpoint_list_count(list); i++) {
        if (strcmp(sidekick_endpoint_list_url(list, i), url) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void test_probed_balancer(int p1, int p2, int dead) {
    char site1[128], site2[128], url1[64], url2[64], url_dead[64];
    snprintf(site1, sizeof site1, "http://127.0.0.1:%d,http://127.0.0.1:%d", p1, dead);
    snprintf(site2, sizeof site2, "http://127.0.0.1:%d", p2);
    snprintf(url1, sizeof url1, "http://127.0.0.1:%d", p1);
    snprintf(url2, sizeof url2, "http://127.0.0.1:%d", p2);
    snprintf(url_dead, sizeof url_dead, "http://127.0.0.1:%d", dead);
    const char *sites[] = {site1, site2};

    static atomic_int calls;
    sidekick_options o;
    sidekick_options_init(&o);
    o.health_path = "/health";
    o.health_interval_ms = 200;
    o.health_timeout_ms = 2000;
    o.connect_timeout_ms = 1000;
    o.policy = "round-robin";
    uint16_t healthy[] = {200, 204};
    o.healthy_statuses = healthy;
    o.healthy_statuses_len = 2;
    uint16_t no_statuses[] = {0};
    o.eject_statuses = no_statuses; /* non-NULL, length 0: the empty list */
    o.eject_statuses_len = 0;
    o.worker_threads = 1;
    o.on_event = on_event;
    o.on_event_user_data = &calls;

    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    sidekick_status st = sidekick_balancer_new(sites, 2, &o, &b, &err);
    CHECK(st == SIDEKICK_STATUS_OK && b != NULL, "new with probes (status %d: %s)", st,
          err ? sidekick_error_message(err) : "");
    if (b == NULL) {
        sidekick_error_free(err);
        return;
    }
    CHECK(sidekick_balancer_site_count(b) == 2, "site_count is 2");
    CHECK(sidekick_balancer_site_count(NULL) == 0, "site_count(NULL) is 0");
    CHECK(sidekick_balancer_ready(b, 20000, &err) == SIDEKICK_STATUS_OK, "ready");
    CHECK(sidekick_balancer_is_available(b), "is_available");
    CHECK(!sidekick_balancer_is_available(NULL), "is_available(NULL) is false");
    st = sidekick_balancer_ready(NULL, 10, &err);
    check_failure("ready(NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "b");

    /* Wait (bounded) until the first site's two endpoints are probed: p1 up, dead down. */
    sidekick_endpoint_list *list = NULL;
    int i1 = -1, id = -1, i2 = -1;
    for (int round = 0; round < 200; round++) {
        sidekick_endpoint_list_free(list);
        list = NULL;
        if (sidekick_balancer_endpoints(b, &list, &err) != SIDEKICK_STATUS_OK) {
            break;
        }
        i1 = find_endpoint(list, url1);
        i2 = find_endpoint(list, url2);
        id = find_endpoint(list, url_dead);
        if (i1 >= 0 && id >= 0 && i2 >= 0 &&
            strcmp(sidekick_endpoint_list_state(list, (size_t)i1), "up") == 0 &&
            strcmp(sidekick_endpoint_list_state(list, (size_t)i2), "up") == 0 &&
            strcmp(sidekick_endpoint_list_state(list, (size_t)id), "down") == 0) {
            break;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(list != NULL && sidekick_endpoint_list_count(list) == 3, "endpoints: 3 listed");
    CHECK(i1 >= 0 && strcmp(sidekick_endpoint_list_state(list, (size_t)i1), "up") == 0,
          "live endpoint of site 1 is up");
    CHECK(i2 >= 0 && strcmp(sidekick_endpoint_list_state(list, (size_t)i2), "up") == 0,
          "endpoint of site 2 is up");
    CHECK(id >= 0 && strcmp(sidekick_endpoint_list_state(list, (size_t)id), "down") == 0,
          "dead endpoint is down");
    CHECK(id >= 0 && sidekick_endpoint_list_last_error(list, (size_t)id) != NULL,
          "dead endpoint has a last error: %s",
          id >= 0 && sidekick_endpoint_list_last_error(list, (size_t)id)
              ? sidekick_endpoint_list_last_error(list, (size_t)id)
              : "(null)");
    CHECK(i1 >= 0 && sidekick_endpoint_list_site(list, (size_t)i1) == 0 &&
              sidekick_endpoint_list_site(list, (size_t)i2) == 1,
          "site indexes");
    uint64_t id1 = i1 >= 0 ? sidekick_endpoint_list_id(list, (size_t)i1) : 0;
    CHECK(id1 != 0, "endpoint ids are not 0");
    CHECK(atomic_load(&events_up) >= 2 && atomic_load(&events_down) >= 1,
          "event callback saw %d up and %d down events", atomic_load(&events_up),
          atomic_load(&events_down));
    /* Out-of-range and NULL accessors. */
    size_t n = sidekick_endpoint_list_count(list);
    CHECK(sidekick_endpoint_list_url(list, n) == NULL && sidekick_endpoint_list_state(list, n) == NULL &&
              sidekick_endpoint_list_id(list, n) == 0 && sidekick_endpoint_list_site(list, n) == 0 &&
              sidekick_endpoint_list_inflight(list, n) == 0 &&
              sidekick_endpoint_list_requests(list, n) == 0 &&
              sidekick_endpoint_list_failures(list, n) == 0 &&
              sidekick_endpoint_list_ejections(list, n) == 0 &&
              sidekick_endpoint_list_latency_us(list, n) == -1 &&
              sidekick_endpoint_list_last_error(list, n) == NULL,
          "accessors out of range give NULL / 0 / -1");
    CHECK(sidekick_endpoint_list_count(NULL) == 0 && sidekick_endpoint_list_url(NULL, 0) == NULL,
          "accessors of a NULL list");
    sidekick_endpoint_list_free(list);
    sidekick_endpoint_list_free(NULL);
    list = NULL;
    st = sidekick_balancer_endpoints(b, NULL, &err);
    check_failure("endpoints(out=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "out");
    st = sidekick_balancer_endpoints(NULL, &list, &err);
    check_failure("endpoints(b=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "b");

    /* Picks: the first site has one live endpoint, so every pick goes there. */
    int on_p1 = 0;
    for (int i = 0; i < 50; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(b, &lease, &err) != SIDEKICK_STATUS_OK) {
            sidekick_error_free(err);
            err = NULL;
            continue;
        }
        on_p1 += strcmp(sidekick_lease_url(lease), url1) == 0 && sidekick_lease_site(lease) == 0 &&
                 sidekick_lease_id(lease) == id1;
        /* The URL pointer is stable for the lease's life. */
        if (sidekick_lease_url(lease) != sidekick_lease_url(lease)) {
            on_p1 = -1000;
        }
        sidekick_lease_finish(lease, SIDEKICK_OUTCOME_STATUS, 200, 1500);
    }
    CHECK(on_p1 == 50, "50 picks went to the live endpoint of site 1 (%d)", on_p1);

    /* Retry elsewhere: excluding it falls over to site 2. */
    sidekick_lease *lease = NULL;
    uint64_t exclude[] = {id1};
    st = sidekick_balancer_pick_excluding(b, exclude, 1, &lease, &err);
    CHECK(st == SIDEKICK_STATUS_OK && lease != NULL && strcmp(sidekick_lease_url(lease), url2) == 0 &&
              sidekick_lease_site(lease) == 1,
          "pick_excluding falls over to site 2");
    CHECK(sidekick_lease_finish(lease, SIDEKICK_OUTCOME_SUCCESS, 0, 0) == SIDEKICK_STATUS_OK,
          "finish(SUCCESS, latency measured by the balancer)");
    lease = NULL;
    st = sidekick_balancer_pick_excluding(b, NULL, 0, &lease, &err);
    CHECK(st == SIDEKICK_STATUS_OK, "pick_excluding(NULL, 0) is a plain pick");
    sidekick_lease_free(lease);
    lease = NULL;
    st = sidekick_balancer_pick_excluding(b, NULL, 2, &lease, &err);
    check_failure("pick_excluding(NULL, 2)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "exclude");
    uint64_t both[] = {id1, sidekick_lease_id(NULL) /* 0 */, 0};
    {
        sidekick_endpoint_list *l2 = NULL;
        sidekick_balancer_endpoints(b, &l2, NULL);
        both[1] = sidekick_endpoint_list_id(l2, (size_t)i2);
        sidekick_endpoint_list_free(l2);
    }
    st = sidekick_balancer_pick_excluding(b, both, 2, &lease, &err);
    check_failure("pick_excluding(every live endpoint)", st, SIDEKICK_STATUS_NO_ENDPOINT, &err,
                  "no endpoint");
    CHECK(lease == NULL, "no lease is written on failure");
    st = sidekick_balancer_pick(NULL, &lease, &err);
    check_failure("pick(b=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "b");
    st = sidekick_balancer_pick(b, NULL, &err);
    check_failure("pick(out=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "out");

    /* Every outcome, and the bad ones (which still consume the lease). */
    const sidekick_outcome outcomes[] = {SIDEKICK_OUTCOME_SUCCESS, SIDEKICK_OUTCOME_STATUS,
                                         SIDEKICK_OUTCOME_RESET,   SIDEKICK_OUTCOME_TIMEOUT,
                                         SIDEKICK_OUTCOME_FAILED,  SIDEKICK_OUTCOME_CANCELLED};
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        /* Site 2 only: excluding the first site's endpoint keeps its statistics clean. */
        st = sidekick_balancer_pick_excluding(b, exclude, 1, &lease, NULL);
        st = st == SIDEKICK_STATUS_OK ? sidekick_lease_finish(lease, outcomes[i], 503, 2000) : st;
        CHECK(st == SIDEKICK_STATUS_OK, "finish with outcome %u", outcomes[i]);
    }
    sidekick_balancer_pick(b, &lease, NULL);
    CHECK(sidekick_lease_finish(lease, 42, 200, 0) == SIDEKICK_STATUS_INVALID_ARGUMENT,
          "finish(unknown outcome) is INVALID_ARGUMENT");
    sidekick_balancer_pick(b, &lease, NULL);
    CHECK(sidekick_lease_finish(lease, SIDEKICK_OUTCOME_STATUS, 42, 0) ==
              SIDEKICK_STATUS_INVALID_ARGUMENT,
          "finish(status 42) is INVALID_ARGUMENT");
    CHECK(sidekick_lease_finish(NULL, SIDEKICK_OUTCOME_SUCCESS, 0, 0) == SIDEKICK_STATUS_NULL_ARGUMENT,
          "finish(NULL)");
    CHECK(sidekick_lease_url(NULL) == NULL && sidekick_lease_id(NULL) == 0 &&
              sidekick_lease_site(NULL) == 0,
          "lease accessors of NULL");
    sidekick_lease_free(NULL);

    /* Statistics: 50 requests of 1.5 ms on p1, nothing in flight. */
    sidekick_balancer_endpoints(b, &list, NULL);
    i1 = find_endpoint(list, url1);
    CHECK(i1 >= 0 && sidekick_endpoint_list_requests(list, (size_t)i1) >= 50 &&
              sidekick_endpoint_list_failures(list, (size_t)i1) == 0 &&
              sidekick_endpoint_list_inflight(list, (size_t)i1) == 0 &&
              sidekick_endpoint_list_ejections(list, (size_t)i1) == 0,
          "p1 counted its requests (%llu)",
          i1 >= 0 ? (unsigned long long)sidekick_endpoint_list_requests(list, (size_t)i1) : 0ULL);
    int64_t lat = i1 >= 0 ? sidekick_endpoint_list_latency_us(list, (size_t)i1) : -1;
    CHECK(lat > 0 && lat < 1000000, "p1 latency estimate %lld us", (long long)lat);
    sidekick_endpoint_list_free(list);
    list = NULL;

    /* Concurrent picks from several threads. */
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (struct worker){.b = b, .errors = 0};
        pthread_create(&threads[t], NULL, pick_worker, &workers[t]);
    }
    int errors = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        errors += workers[t].errors;
    }
    CHECK(errors == 0, "%d threads x %d concurrent pick/finish pairs without error", THREADS,
          PICKS_PER_THREAD);

    /* The request helper. */
    sidekick_response *resp = NULL;
    st = sidekick_balancer_request(b, NULL, "/hello?x=1", NULL, 0, NULL, 0, 10000, &resp, &err);
    CHECK(st == SIDEKICK_STATUS_OK && resp != NULL, "request GET (status %d %s)", st,
          err ? sidekick_error_message(err) : "");
    if (resp != NULL) {
        const char *body = (const char *)sidekick_response_body(resp);
        size_t len = sidekick_response_body_len(resp);
        char text[256] = {0};
        memcpy(text, body, len < sizeof text - 1 ? len : sizeof text - 1);
        CHECK(sidekick_response_status(resp) == 200, "response status 200");
        CHECK(strstr(text, "ok GET /hello?x=1") != NULL, "response body: %s", text);
        const char *backend = sidekick_response_header(resp, "x-BACKEND");
        CHECK(backend != NULL && atoi(backend) == p1, "X-Backend header is p1 (%s)",
              backend ? backend : "(null)");
        CHECK(sidekick_response_header(resp, "x-missing") == NULL, "missing header gives NULL");
        CHECK(sidekick_response_header(resp, NULL) == NULL, "header(name=NULL) gives NULL");
        sidekick_response_free(resp);
        resp = NULL;
    }
    const char *headers[] = {"Host: bucket.example", "X-Test: 1"};
    const char payload[] = "hello body";
    st = sidekick_balancer_request(b, "PUT", "http://virtual.example/obj", headers, 2,
                                   (const uint8_t *)payload, strlen(payload), 0, &resp, &err);
    CHECK(st == SIDEKICK_STATUS_OK, "request PUT with headers and body");
    if (resp != NULL) {
        char text[256] = {0};
        size_t len = sidekick_response_body_len(resp);
        memcpy(text, sidekick_response_body(resp), len < sizeof text - 1 ? len : sizeof text - 1);
        CHECK(strstr(text, "ok PUT /obj host=bucket.example len=10") != NULL,
              "PUT reached the backend with its Host and body: %s", text);
        sidekick_response_free(resp);
        resp = NULL;
    }
    st = sidekick_balancer_request(b, "GET", "/status/503", NULL, 0, NULL, 0, 10000, &resp, &err);
    CHECK(st == SIDEKICK_STATUS_OK && sidekick_response_status(resp) == 503,
          "a 503 answer is a response, not a failure");
    sidekick_response_free(resp);
    resp = NULL;
    st = sidekick_balancer_request(b, "GET", "/sleep/3000", NULL, 0, NULL, 0, 300, &resp, &err);
    check_failure("request(timeout 300 ms)", st, SIDEKICK_STATUS_TIMEOUT, &err, "300 ms");
    st = sidekick_balancer_request(b, "BAD METHOD", "/", NULL, 0, NULL, 0, 0, &resp, &err);
    check_failure("request(bad method)", st, SIDEKICK_STATUS_INVALID_ARGUMENT, &err, "BAD METHOD");
    const char *bad_headers[] = {"NoColon"};
    st = sidekick_balancer_request(b, "GET", "/", bad_headers, 1, NULL, 0, 0, &resp, &err);
    check_failure("request(bad header)", st, SIDEKICK_STATUS_INVALID_ARGUMENT, &err, "NoColon");
    st = sidekick_balancer_request(b, "GET", "/", NULL, 1, NULL, 0, 0, &resp, &err);
    check_failure("request(headers=NULL, n=1)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "headers");
    st = sidekick_balancer_request(b, "GET", NULL, NULL, 0, NULL, 0, 0, &resp, &err);
    check_failure("request(target=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "target");
    st = sidekick_balancer_request(b, "GET", "/", NULL, 0, NULL, 5, 0, &resp, &err);
    check_failure("request(body=NULL, len=5)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "body");
    st = sidekick_balancer_request(b, "GET", "/", NULL, 0, NULL, 0, 0, NULL, &err);
    check_failure("request(out=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "out");
    st = sidekick_balancer_request(NULL, "GET", "/", NULL, 0, NULL, 0, 0, &resp, &err);
    check_failure("request(b=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "b");
    CHECK(resp == NULL, "no response is written on failure");
    CHECK(sidekick_response_status(NULL) == 0 && sidekick_response_body(NULL) == NULL &&
              sidekick_response_body_len(NULL) == 0 && sidekick_response_header(NULL, "a") == NULL,
          "response accessors of NULL");
    sidekick_response_free(NULL);

    /* A lease may outlive its balancer. */
    lease = NULL;
    sidekick_balancer_pick(b, &lease, NULL);
    sidekick_balancer_free(b);
    CHECK(lease != NULL && strcmp(sidekick_lease_url(lease), url1) == 0,
          "a lease stays readable after its balancer is freed");
    CHECK(sidekick_lease_finish(lease, SIDEKICK_OUTCOME_CONNECT, 0, 10) == SIDEKICK_STATUS_OK,
          "and can still be finished");
    sidekick_balancer_free(NULL);
}

static void test_unprobed_balancer(int p1, int dead) {
    /* Probes off: every endpoint is in rotation at once; failures eject. */
    char site[128], url_dead[64];
    snprintf(site, sizeof site, "http://127.0.0.1:%d,http://127.0.0.1:%d", dead, p1);
    snprintf(url_dead, sizeof url_dead, "http://127.0.0.1:%d", dead);
    const char *sites[] = {site};
    static atomic_int calls;
    sidekick_options o;
    sidekick_options_init(&o);
    o.health_check = false;
    o.policy = "rr"; /* the dead endpoint gets its turn (p2c could avoid it after one sample) */
    o.max_ejected_share = 1.0;
    o.eject_backoff_base_ms = 60000;
    o.eject_backoff_max_ms = 120000;
    o.on_event = on_event;
    o.on_event_user_data = &calls;
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    CHECK(sidekick_balancer_new(sites, 1, &o, &b, &err) == SIDEKICK_STATUS_OK, "new without probes");
    if (b == NULL) {
        sidekick_error_free(err);
        return;
    }
    CHECK(sidekick_balancer_ready(b, 0, &err) == SIDEKICK_STATUS_OK, "ready at once");

    /* The request helper retries the refused connection on the other endpoint. */
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        sidekick_response *resp = NULL;
        if (sidekick_balancer_request(b, "GET", "/x", NULL, 0, NULL, 0, 10000, &resp, NULL) ==
                SIDEKICK_STATUS_OK &&
            sidekick_response_status(resp) == 200) {
            ok++;
        }
        sidekick_response_free(resp);
    }
    CHECK(ok == 10, "10 requests succeed with one dead endpoint (%d)", ok);
    CHECK(atomic_load(&events_ejected) >= 1, "the dead endpoint was ejected (event seen)");

    sidekick_endpoint_list *list = NULL;
    sidekick_balancer_endpoints(b, &list, NULL);
    int idead = find_endpoint(list, url_dead);
    CHECK(idead >= 0 && strcmp(sidekick_endpoint_list_state(list, (size_t)idead), "ejected") == 0 &&
              sidekick_endpoint_list_ejections(list, (size_t)idead) == 1 &&
              sidekick_endpoint_list_failures(list, (size_t)idead) >= 1,
          "the dead endpoint is listed as ejected");
    sidekick_endpoint_list_free(list);
    sidekick_balancer_free(b);
}

static void test_nothing_available(int dead) {
    char config[256];
    snprintf(config, sizeof config,
             "# probes on, the only endpoint is dead\n"
             "site=http://127.0.0.1:%d; health_interval_ms=100; health_timeout_ms=500\n"
             "connect_timeout_ms=500; worker_threads=1; failure_statuses=500-599,429\n",
             dead);
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    CHECK(sidekick_balancer_new_from_config(NULL, 0, config, &b, &err) == SIDEKICK_STATUS_OK,
          "new_from_config");
    if (b == NULL) {
        sidekick_error_free(err);
        return;
    }
    sidekick_status st = sidekick_balancer_ready(b, 300, &err);
    check_failure("ready(dead site)", st, SIDEKICK_STATUS_NOT_READY, &err, "available");
    sidekick_lease *lease = NULL;
    st = sidekick_balancer_pick(b, &lease, &err);
    check_failure("pick(dead site)", st, SIDEKICK_STATUS_NO_ENDPOINT, &err, "no endpoint");
    sidekick_response *resp = NULL;
    st = sidekick_balancer_request(b, "GET", "/", NULL, 0, NULL, 0, 0, &resp, &err);
    check_failure("request(dead site)", st, SIDEKICK_STATUS_NO_ENDPOINT, &err, "no endpoint");
    sidekick_balancer_free(b);

    /* Probes off and every endpoint dead: the request helper reports the connect failure. */
    const char *sites[] = {config};
    snprintf(config, sizeof config, "http://127.0.0.1:%d", dead);
    b = NULL;
    CHECK(sidekick_balancer_new_from_config(sites, 1, "health_check=false", &b, &err) ==
              SIDEKICK_STATUS_OK,
          "new_from_config with a sites array");
    st = sidekick_balancer_request(b, "GET", "/", NULL, 0, NULL, 0, 5000, &resp, &err);
    check_failure("request(refused)", st, SIDEKICK_STATUS_CONNECT, &err, "connect");
    sidekick_balancer_free(b);
}

/* Hedging through the request helper (the engine's client): a site of a silent endpoint (a
 * listening socket never accepted, so no answer ever comes) and a live one, round-robin. Every
 * GET is answered by the live one well within its 3 s timeout: the attempt to the silent one is
 * hedged after 50 ms. The hedge options come from the engine's option table. */
static void test_hedge(int live_port) {
    int silent = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int listening = silent >= 0 && bind(silent, (struct sockaddr *)&a, sizeof a) == 0 &&
                    listen(silent, 16) == 0 &&
                    getsockname(silent, (struct sockaddr *)&a, &alen) == 0;
    CHECK(listening, "a silent listener on 127.0.0.1");
    char config[256];
    snprintf(config, sizeof config,
             "site=http://127.0.0.1:%d,http://127.0.0.1:%d; health_check=false\n"
             "policy=round-robin; hedge_delay_ms=50; hedge_max=1; worker_threads=1",
             ntohs(a.sin_port), live_port);
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    CHECK(listening && sidekick_balancer_new_from_config(NULL, 0, config, &b, &err) ==
                           SIDEKICK_STATUS_OK,
          "new_from_config with hedge_delay_ms");
    int answered = 0;
    for (int i = 0; i < 2 && b != NULL; i++) {
        sidekick_response *resp = NULL;
        sidekick_status st = sidekick_balancer_request(b, "GET", "/", NULL, 0, NULL, 0, 3000, &resp, &err);
        answered += st == SIDEKICK_STATUS_OK && sidekick_response_status(resp) == 200;
        sidekick_error_free(err);
        err = NULL;
        sidekick_response_free(resp);
    }
    CHECK(answered == 2, "2 GETs over a silent and a live endpoint, hedged: both answered");
    sidekick_balancer_free(b);
    const char *sites[] = {"http://127.0.0.1:9"};
    b = NULL;
    sidekick_status st = sidekick_balancer_new_from_config(sites, 1, "hedge_percentile=101", &b, &err);
    check_failure("config(hedge_percentile=101)", st, SIDEKICK_STATUS_CONFIG, &err, "hedge_percentile");
    if (silent >= 0) {
        close(silent);
    }
}

/* A backend that resets the connection while a large body is still being written: the library's
 * socket write fails with EPIPE, and the SIGPIPE that comes with it must not kill this process
 * (which, like most C programs, does not ignore the signal). */
static void test_broken_pipe(int reset) {
    char site[64];
    snprintf(site, sizeof site, "http://127.0.0.1:%d", reset);
    const char *sites[] = {site};
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    CHECK(sidekick_balancer_new_from_config(sites, 1, "health_check=off; max_attempts=1", &b, &err) ==
              SIDEKICK_STATUS_OK,
          "new over a resetting backend");
    size_t len = 16u << 20;
    uint8_t *body = calloc(1, len);
    int survived = 0;
    for (int i = 0; i < 3 && body != NULL; i++) {
        sidekick_response *resp = NULL;
        sidekick_status st =
            sidekick_balancer_request(b, "PUT", "/big", NULL, 0, body, len, 10000, &resp, &err);
        survived += st != SIDEKICK_STATUS_OK;
        sidekick_error_free(err);
        err = NULL;
        sidekick_response_free(resp);
    }
    CHECK(survived == 3, "3 PUTs of 16 MiB to a resetting backend fail cleanly, no SIGPIPE death");
    free(body);
    sidekick_balancer_free(b);
}

/* Slow start and graded spill-over through the config string (the engine's option table).
 * Site 1 is half dead (1 of 2 endpoints up), so with spill-over it keeps 0.5 x 1.4 = 70 % of
 * the picks and site 2 gets 30 % (all-or-nothing would give site 2 none). No event callback:
 * the spill-over share event has no C kind of its own. */
static void test_selection_options(int p1, int p2, int dead) {
    char config[512];
    snprintf(config, sizeof config,
             "site=http://127.0.0.1:%d,http://127.0.0.1:%d; site=http://127.0.0.1:%d\n"
             "health_path=/health; healthy_statuses=200,204; health_interval_ms=100\n"
             "slow_start_ms=500; site_spillover=on; overprovisioning=1.4; worker_threads=1",
             p1, dead, p2);
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    sidekick_status st = sidekick_balancer_new_from_config(NULL, 0, config, &b, &err);
    CHECK(st == SIDEKICK_STATUS_OK && b != NULL, "new_from_config with slow_start and spill-over (%s)",
          err ? sidekick_error_message(err) : "");
    if (b == NULL) {
        sidekick_error_free(err);
        return;
    }
    char url_dead[64];
    snprintf(url_dead, sizeof url_dead, "http://127.0.0.1:%d", dead);
    /* Wait (bounded) until every endpoint has its verdict: the dead one down, the others up. */
    int settled = 0;
    for (int round = 0; round < 200 && !settled; round++) {
        sidekick_endpoint_list *list = NULL;
        if (sidekick_balancer_endpoints(b, &list, &err) != SIDEKICK_STATUS_OK) {
            break;
        }
        int up = 0, down = 0;
        for (size_t i = 0; i < sidekick_endpoint_list_count(list); i++) {
            const char *state = sidekick_endpoint_list_state(list, i);
            int is_dead = strcmp(sidekick_endpoint_list_url(list, i), url_dead) == 0;
            up += !is_dead && strcmp(state, "up") == 0;
            down += is_dead && strcmp(state, "down") == 0;
        }
        sidekick_endpoint_list_free(list);
        settled = up == 2 && down == 1;
        if (!settled) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    CHECK(settled, "spill-over balancer: endpoints probed");
    int to_site2 = 0, picks = 0;
    for (int i = 0; i < 1000; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(b, &lease, NULL) != SIDEKICK_STATUS_OK) {
            break;
        }
        picks++;
        to_site2 += sidekick_lease_site(lease) == 1;
        sidekick_lease_free(lease);
    }
    /* 300 expected; 200-400 is over 6 standard deviations either side. */
    CHECK(picks == 1000 && to_site2 > 200 && to_site2 < 400,
          "spill-over: site 2 got %d of %d picks (30 %% expected)", to_site2, picks);
    sidekick_balancer_free(b);

    b = NULL;
    snprintf(config, sizeof config, "site=http://127.0.0.1:%d; overprovisioning=0", p1);
    st = sidekick_balancer_new_from_config(NULL, 0, config, &b, &err);
    check_failure("config(overprovisioning=0)", st, SIDEKICK_STATUS_CONFIG, &err, "overprovisioning");
    snprintf(config, sizeof config, "site=http://127.0.0.1:%d; slow_start_ms=soon", p1);
    st = sidekick_balancer_new_from_config(NULL, 0, config, &b, &err);
    check_failure("config(slow_start_ms=soon)", st, SIDEKICK_STATUS_CONFIG, &err, "slow_start");
    snprintf(config, sizeof config, "site=http://127.0.0.1:%d; site_spillover=maybe", p1);
    st = sidekick_balancer_new_from_config(NULL, 0, config, &b, &err);
    check_failure("config(site_spillover=maybe)", st, SIDEKICK_STATUS_CONFIG, &err, "site_spillover");
}

/* ----- live membership ----- */

/* The state of `url` in a fresh endpoint list, or "absent". Copies it into `out`. */
static void state_of(const sidekick_balancer *b, const char *url, char *out, size_t n) {
    sidekick_endpoint_list *list = NULL;
    snprintf(out, n, "absent");
    if (sidekick_balancer_endpoints(b, &list, NULL) != SIDEKICK_STATUS_OK) {
        return;
    }
    int i = find_endpoint(list, url);
    if (i >= 0) {
        snprintf(out, n, "%s", sidekick_endpoint_list_state(list, (size_t)i));
    }
    sidekick_endpoint_list_free(list);
}

static void test_membership(int p1, int p2, int dead) {
    char url1[64], url2[64], url_dead[64], state[32];
    snprintf(url1, sizeof url1, "http://127.0.0.1:%d", p1);
    snprintf(url2, sizeof url2, "http://127.0.0.1:%d", p2);
    snprintf(url_dead, sizeof url_dead, "http://127.0.0.1:%d", dead);
    const char *sites[] = {url1};
    static atomic_int calls;
    sidekick_options o;
    sidekick_options_init(&o);
    o.health_path = "/health";
    o.health_interval_ms = 100;
    o.connect_timeout_ms = 1000;
    o.worker_threads = 1;
    o.on_event = on_event;
    o.on_event_user_data = &calls;
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    sidekick_status st = sidekick_balancer_new(sites, 1, &o, &b, &err);
    CHECK(st == SIDEKICK_STATUS_OK && b != NULL, "membership: new (status %d)", st);
    if (b == NULL) {
        sidekick_error_free(err);
        return;
    }
    CHECK(sidekick_balancer_ready(b, 20000, NULL) == SIDEKICK_STATUS_OK, "membership: ready");
    CHECK(sidekick_balancer_probe_tasks(b) == 1, "membership: one probe task");

    /* A dead endpoint joins but never takes traffic: it is probed first. */
    st = sidekick_balancer_add_endpoint(b, 0, url_dead, &err);
    CHECK(st == SIDEKICK_STATUS_OK, "add_endpoint(dead) (status %d)", st);
    CHECK(sidekick_balancer_probe_tasks(b) == 2, "membership: a probe task per endpoint");
    int on_dead = 0;
    for (int i = 0; i < 100; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(b, &lease, NULL) == SIDEKICK_STATUS_OK) {
            on_dead += strcmp(sidekick_lease_url(lease), url_dead) == 0;
            sidekick_lease_finish(lease, SIDEKICK_OUTCOME_SUCCESS, 200, 1000);
        }
    }
    CHECK(on_dead == 0, "an added endpoint takes no traffic before a probe passes (%d)", on_dead);

    /* A live one joins and comes up after its first probe. */
    st = sidekick_balancer_add_endpoint(b, 0, url2, &err);
    CHECK(st == SIDEKICK_STATUS_OK, "add_endpoint(live)");
    for (int round = 0; round < 200; round++) {
        state_of(b, url2, state, sizeof state);
        if (strcmp(state, "up") == 0) {
            break;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(strcmp(state, "up") == 0, "the added live endpoint came up (%s)", state);

    /* Bad changes are refused by name. */
    st = sidekick_balancer_add_endpoint(b, 7, url2, &err);
    check_failure("add_endpoint(site 7)", st, SIDEKICK_STATUS_INVALID_ARGUMENT, &err, "index 7");
    st = sidekick_balancer_add_endpoint(b, 0, "127.0.0.1:1", &err);
    check_failure("add_endpoint(no scheme)", st, SIDEKICK_STATUS_CONFIG, &err, "scheme");
    st = sidekick_balancer_add_endpoint(b, 0, NULL, &err);
    check_failure("add_endpoint(NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "url");
    st = sidekick_balancer_remove_endpoint(b, "http://127.0.0.1:1", &err);
    check_failure("remove_endpoint(unknown)", st, SIDEKICK_STATUS_INVALID_ARGUMENT, &err,
                  "in no site");
    st = sidekick_balancer_remove_site(b, 0, &err);
    check_failure("remove_site(only)", st, SIDEKICK_STATUS_INVALID_ARGUMENT, &err, "only site");
    st = sidekick_balancer_remove_endpoint(NULL, url1, &err);
    check_failure("remove_endpoint(b=NULL)", st, SIDEKICK_STATUS_NULL_ARGUMENT, &err, "b");

    /* Removing: never picked again, its lease still finishes, its probe task ends. */
    sidekick_lease *held = NULL;
    for (int i = 0; i < 100 && held == NULL; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(b, &lease, NULL) != SIDEKICK_STATUS_OK) {
            continue;
        }
        if (strcmp(sidekick_lease_url(lease), url1) == 0) {
            held = lease;
        } else {
            sidekick_lease_finish(lease, SIDEKICK_OUTCOME_SUCCESS, 200, 1000);
        }
    }
    CHECK(held != NULL, "a lease on the endpoint about to leave");
    CHECK(sidekick_balancer_remove_endpoint(b, url1, &err) == SIDEKICK_STATUS_OK,
          "remove_endpoint(live)");
    CHECK(sidekick_balancer_remove_endpoint(b, url_dead, &err) == SIDEKICK_STATUS_OK,
          "remove_endpoint(dead)");
    int elsewhere = 0;
    for (int i = 0; i < 100; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(b, &lease, NULL) == SIDEKICK_STATUS_OK) {
            elsewhere += strcmp(sidekick_lease_url(lease), url2) != 0;
            sidekick_lease_finish(lease, SIDEKICK_OUTCOME_SUCCESS, 200, 1000);
        }
    }
    CHECK(elsewhere == 0, "removed endpoints are never picked (%d)", elsewhere);
    CHECK(sidekick_lease_finish(held, SIDEKICK_OUTCOME_SUCCESS, 200, 1000) == SIDEKICK_STATUS_OK,
          "a lease on a removed endpoint finishes normally");
    size_t tasks = 0;
    for (int round = 0; round < 200; round++) {
        tasks = sidekick_balancer_probe_tasks(b);
        if (tasks == 1) {
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(tasks == 1, "the removed endpoints' probe tasks ended (%zu alive)", tasks);

    /* Replacing the sites: the one that stays keeps its state; a second site joins. */
    char site1[128];
    snprintf(site1, sizeof site1, "%s,%s", url2, url1);
    const char *next[] = {site1, url_dead};
    CHECK(sidekick_balancer_set_sites(b, next, 2, &err) == SIDEKICK_STATUS_OK, "set_sites");
    CHECK(sidekick_balancer_site_count(b) == 2, "set_sites: 2 sites");
    state_of(b, url2, state, sizeof state);
    CHECK(strcmp(state, "up") == 0, "an endpoint kept by set_sites stays up (%s)", state);
    CHECK(sidekick_balancer_set_site(b, 1, "http://x{", &err) == SIDEKICK_STATUS_CONFIG,
          "set_site(bad spec)");
    sidekick_error_free(err);
    err = NULL;
    CHECK(sidekick_balancer_remove_site(b, 1, &err) == SIDEKICK_STATUS_OK, "remove_site(1)");
    CHECK(sidekick_balancer_probe_tasks(NULL) == 0, "probe_tasks(NULL) is 0");
    CHECK(atomic_load(&events_added) >= 4 && atomic_load(&events_removed) >= 3,
          "added/removed events (%d, %d)", atomic_load(&events_added),
          atomic_load(&events_removed));
    sidekick_balancer_free(b);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s LIVE_PORT_1 LIVE_PORT_2 DEAD_PORT RESET_PORT\n", argv[0]);
        return 2;
    }
    int p1 = atoi(argv[1]), p2 = atoi(argv[2]), dead = atoi(argv[3]), reset = atoi(argv[4]);
    char live[64];
    snprintf(live, sizeof live, "http://127.0.0.1:%d", p1);

    test_statics();
    test_options_and_config_errors(live);
    test_probed_balancer(p1, p2, dead);
    test_selection_options(p1, p2, dead);
    test_unprobed_balancer(p1, dead);
    test_membership(p1, p2, dead);
    test_nothing_available(dead);
    test_broken_pipe(reset);
    test_hedge(p1);

    CHECK(atomic_load(&events_other) == 0, "no malformed or unexpected events");
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
