/*
 * The smallest useful client of sidekick.h: build a balancer over the sites given on the command
 * line, wait until an endpoint is up, and for a few requests pick an endpoint, "send" to it (a
 * real client would use its own HTTP stack here), and report how it went.
 *
 *   cc -Iffi/include pick.c -Lffi/target/release -lsidekick_ffi -o pick
 *   ./pick "http://127.0.0.1:{9001...9003}" "http://10.0.1.1:9000"
 */
#include <stdio.h>

#include "sidekick.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SITE [SITE...]\n", argv[0]);
        return 2;
    }
    sidekick_options opts;
    sidekick_options_init(&opts);
    opts.health_path = "/health";
    opts.health_interval_ms = 1000;

    sidekick_balancer *balancer = NULL;
    sidekick_error *err = NULL;
    if (sidekick_balancer_new((const char *const *)&argv[1], (size_t)(argc - 1), &opts, &balancer,
                              &err) != SIDEKICK_STATUS_OK ||
        sidekick_balancer_ready(balancer, 5000, &err) != SIDEKICK_STATUS_OK) {
        fprintf(stderr, "sidekick: %s\n", sidekick_error_message(err));
        sidekick_error_free(err);
        sidekick_balancer_free(balancer);
        return 1;
    }

    for (int i = 0; i < 5; i++) {
        sidekick_lease *lease = NULL;
        if (sidekick_balancer_pick(balancer, &lease, &err) != SIDEKICK_STATUS_OK) {
            fprintf(stderr, "pick: %s\n", sidekick_error_message(err));
            sidekick_error_free(err);
            err = NULL;
            continue;
        }
        printf("request %d -> %s/bucket/key (site %u)\n", i, sidekick_lease_url(lease),
               sidekick_lease_site(lease));
        /* ... send it, measure it ... then report: a 200 answer after 1.2 ms. */
        sidekick_lease_finish(lease, SIDEKICK_OUTCOME_STATUS, 200, 1200);
    }

    sidekick_endpoint_list *list = NULL;
    if (sidekick_balancer_endpoints(balancer, &list, NULL) == SIDEKICK_STATUS_OK) {
        for (size_t i = 0; i < sidekick_endpoint_list_count(list); i++) {
            printf("%-28s site %u  %-8s requests %llu\n", sidekick_endpoint_list_url(list, i),
                   sidekick_endpoint_list_site(list, i), sidekick_endpoint_list_state(list, i),
                   (unsigned long long)sidekick_endpoint_list_requests(list, i));
        }
        sidekick_endpoint_list_free(list);
    }
    sidekick_balancer_free(balancer);
    return 0;
}
