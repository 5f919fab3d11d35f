/*
 * The shared attempt-policy vectors (tests/vectors/attempt_policy.txt at the repository root)
 * through the C ABI: sidekick_attempts_new, _pick, _decide, _free. Run by ffi/test.sh under
 * valgrind:
 *
 *   test_attempts PATH/TO/attempt_policy.txt
 *
 * Nothing is contacted: the endpoints are never connected to (health checks off). Prints one
 * line per case and exits 1 if any failed (or if the file holds no case).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidekick.h"

#define MAX_FIELDS 64

static int failures;

/* The SIDEKICK_OUTCOME_* and status of a vector's outcome word; -1 when unknown. */
static int outcome_of(const char *word, uint16_t *status) {
    static const struct {
        const char *name;
        sidekick_outcome outcome;
    } names[] = {
        {"success", SIDEKICK_OUTCOME_SUCCESS}, {"connect", SIDEKICK_OUTCOME_CONNECT},
        {"reset", SIDEKICK_OUTCOME_RESET},     {"timeout", SIDEKICK_OUTCOME_TIMEOUT},
        {"failed", SIDEKICK_OUTCOME_FAILED},   {"cancelled", SIDEKICK_OUTCOME_CANCELLED},
    };
    *status = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(word, names[i].name) == 0) {
            return (int)names[i].outcome;
        }
    }
    char *end = NULL;
    long s = strtol(word, &end, 10);
    if (end == word || *end != '\0' || s < 100 || s > 599) {
        return -1;
    }
    *status = (uint16_t)s;
    return (int)SIDEKICK_OUTCOME_STATUS;
}

/* Run one case (fields already split); returns 1 when every step decided as written. */
static int run_case(char **f, int n) {
    const char *name = f[0];
    const char *site = f[1];
    char config[256];
    snprintf(config, sizeof config, "health_check=false; max_attempts=%s%s", f[2],
             strcmp(f[3], "exhausted") == 0 ? "; retry_budget_ratio=0; retry_budget_min_per_sec=0"
                                           : "");
    sidekick_balancer *b = NULL;
    sidekick_error *err = NULL;
    const char *sites[] = {site};
    if (sidekick_balancer_new_from_config(sites, 1, config, &b, &err) != SIDEKICK_STATUS_OK) {
        printf("FAILED %s: balancer: %s\n", name, err ? sidekick_error_message(err) : "?");
        sidekick_error_free(err);
        return 0;
    }
    int ok = 1;
    sidekick_attempts *a = NULL;
    sidekick_lease *lease = NULL;
    if (sidekick_attempts_new(b, f[4], strcmp(f[5], "1") == 0, strcmp(f[6], "1") == 0, &a, NULL) !=
            SIDEKICK_STATUS_OK ||
        sidekick_attempts_pick(a, &lease, NULL) != SIDEKICK_STATUS_OK) {
        printf("FAILED %s: no attempts or no first lease\n", name);
        ok = 0;
    }
    for (int i = 7; ok && i < n; i++) {
        char step[128];
        snprintf(step, sizeof step, "%s", f[i]);
        char *eq = strchr(step, '=');
        char *slash = strchr(step, '/');
        if (eq == NULL || slash == NULL || slash > eq) {
            printf("FAILED %s: malformed step %s\n", name, f[i]);
            ok = 0;
            break;
        }
        *eq = '\0';
        *slash = '\0';
        uint16_t status;
        int outcome = outcome_of(step, &status);
        if (outcome < 0 || lease == NULL) {
            printf("FAILED %s: step %d: bad outcome %s or no lease\n", name, i - 6, step);
            ok = 0;
            break;
        }
        sidekick_decision d = 99;
        const char *reason = NULL;
        sidekick_lease *next = NULL;
        sidekick_status st = sidekick_attempts_decide(a, lease, (sidekick_outcome)outcome, status,
                                                      strcmp(slash + 1, "1") == 0, &d, &reason,
                                                      &next, NULL);
        lease = NULL; /* consumed */
        char got[96];
        const char *word = d == SIDEKICK_DECISION_DONE    ? "done"
                           : d == SIDEKICK_DECISION_RETRY ? "retry"
                                                          : "giveup";
        if (d == SIDEKICK_DECISION_DONE) {
            snprintf(got, sizeof got, "done");
        } else {
            snprintf(got, sizeof got, "%s:%s", word, reason ? reason : "(null)");
        }
        if (st != SIDEKICK_STATUS_OK || strcmp(got, eq + 1) != 0) {
            printf("FAILED %s: step %d: got %s (status %d), want %s\n", name, i - 6, got, st,
                   eq + 1);
            ok = 0;
        }
        if (d == SIDEKICK_DECISION_DONE) {
            /* Done hands the lease back open: finish it as the caller would. */
            sidekick_lease_finish(next, (sidekick_outcome)outcome, status, 0);
        } else if (d == SIDEKICK_DECISION_RETRY) {
            lease = next;
        } else if (next != NULL) {
            printf("FAILED %s: step %d: a give-up returned a lease\n", name, i - 6);
            sidekick_lease_free(next);
            ok = 0;
        }
    }
    if (ok && lease != NULL) {
        printf("FAILED %s: the steps left a retry open\n", name);
        ok = 0;
    }
    if (ok && sidekick_attempts_count(a) != (uint32_t)(n - 7)) {
        printf("FAILED %s: %u attempts counted, want %d\n", name, sidekick_attempts_count(a),
               n - 7);
        ok = 0;
    }
    sidekick_lease_free(lease);
    sidekick_attempts_free(a);
    sidekick_balancer_free(b);
    if (ok) {
        printf("ok %s\n", name);
    }
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH/TO/attempt_policy.txt\n", argv[0]);
        return 2;
    }
    FILE *file = fopen(argv[1], "r");
    if (file == NULL) {
        perror(argv[1]);
        return 2;
    }
    char line[4096];
    int cases = 0;
    while (fgets(line, sizeof line, file) != NULL) {
        char *f[MAX_FIELDS];
        int n = 0;
        for (char *tok = strtok(line, " \t\r\n"); tok != NULL && n < MAX_FIELDS;
             tok = strtok(NULL, " \t\r\n")) {
            f[n++] = tok;
        }
        if (n == 0 || f[0][0] == '#') {
            continue;
        }
        cases++;
        if (n < 8) {
            printf("FAILED line with %d fields (need 8 or more): %s\n", n, f[0]);
            failures++;
            continue;
        }
        if (!run_case(f, n)) {
            failures++;
        }
    }
    fclose(file);
    /* NULL handles are refused, never dereferenced. */
    sidekick_attempts *a = NULL;
    if (sidekick_attempts_new(NULL, "GET", false, true, &a, NULL) !=
            SIDEKICK_STATUS_NULL_ARGUMENT ||
        a != NULL) {
        printf("FAILED sidekick_attempts_new(NULL balancer)\n");
        failures++;
    }
    sidekick_attempts_free(NULL);
    printf("attempt policy vectors: %d cases, %d failed\n", cases, failures);
    return failures == 0 && cases > 0 ? 0 : 1;
}
