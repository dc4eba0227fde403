/* ctlroll.c - a rolling restart, driven from hyphactl with the commands
 * every operator has: status NAME to learn the instances, then for each,
 * restart NAME[i] and status NAME[i] until it is ready with a new pid.
 * Nothing new in hyphad: a rollout interrupted (Ctrl-C) leaves every
 * instance in a state `status` explains. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctlclient.h"
#include "ctlroll.h"

#define REPLY_TIMEOUT_MS 5000
#define POLL_NS 100000000L /* status every 100 ms while an instance comes back */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ask(const char *sock, json_t *req, json_t **reply) { return conn_ask(sock, req, reply, REPLY_TIMEOUT_MS); }

/* status LABEL's one instance (a new reference), or NULL with *rc. */
static json_t *instance_status(const char *sock, const char *label, int *rc)
{
    json_t *r = NULL;
    if ((*rc = ask(sock, json_pack("{s:s,s:s}", "cmd", "status", "name", label), &r)) != EXIT_OK)
        return NULL;
    json_t *w = json_incref(json_array_get(json_object_get(r, "workers"), 0));
    json_decref(r);
    return w;
}

typedef struct step {
    char label[160];
    json_int_t old_pid, pid; /* 0: none */
    double took_s;
} step;

/* Restart one instance and wait for it: EXIT_OK, or the exit code with why. */
static int roll_one(const char *sock, step *s, bool preload, double timeout_s, char *why, size_t whylen)
{
    json_t *r = NULL;
    int rc = ask(sock, json_pack("{s:s,s:s,s:b}", "cmd", "restart", "name", s->label, "preload", preload), &r);
    if (rc != EXIT_OK) {
        snprintf(why, whylen, "%s: restart refused", s->label);
        return rc;
    }
    json_decref(r);
    double t0 = now_s();
    for (;;) {
        json_t *w = instance_status(sock, s->label, &rc);
        if (!w) {
            snprintf(why, whylen, "%s: status failed", s->label);
            return rc;
        }
        char state[32];
        snprintf(state, sizeof state, "%s", json_string_value(json_object_get(w, "state")) ?: "?");
        json_int_t pid = json_integer_value(json_object_get(w, "pid"));
        bool ready = json_is_true(json_object_get(w, "ready"));
        bool failed = strcmp(state, "failed") == 0;
        json_decref(w);
        s->took_s = now_s() - t0;
        if (ready && pid > 0 && pid != s->old_pid) {
            s->pid = pid;
            return EXIT_OK;
        }
        if (failed || s->took_s >= timeout_s) {
            snprintf(why, whylen, "%s %s after %.1fs (state %s)", s->label, failed ? "failed" : "not ready",
                     s->took_s, state);
            return EXIT_FAIL;
        }
        nanosleep(&(struct timespec){0, POLL_NS}, NULL);
    }
}

static void report(const step *steps, size_t done, size_t total, const char *name, const char *why, bool json_out)
{
    if (json_out) {
        json_t *list = json_array();
        for (size_t i = 0; i < done; i++)
            json_array_append_new(list, json_pack("{s:s,s:I,s:I,s:f}", "instance", steps[i].label, "old_pid",
                                                  steps[i].old_pid, "pid", steps[i].pid, "ready_after_s",
                                                  (double)(long)(steps[i].took_s * 1000.0) / 1000.0));
        json_t *j = json_pack("{s:b,s:o,s:I}", "ok", why == NULL, "restarted", list, "instances", (json_int_t)total);
        if (why)
            json_object_set_new(j, "error", json_string(why));
        char *text = json_dumps(j, JSON_COMPACT);
        printf("%s\n", text ? text : "{\"ok\":false,\"error\":\"out of memory\"}");
        free(text);
        json_decref(j);
        return;
    }
    if (why)
        fprintf(stderr, "hyphactl: rollout of %s stopped: %s; %zu of %zu restarted, the rest left as they were\n",
                name, why, done, total);
    else
        printf("rolled %s: %zu instance%s, one at a time\n", name, total, total == 1 ? "" : "s");
}

int hy_roll_restart(const char *sock, json_t *req, double timeout_s, bool json_out)
{
    char name[256];
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(req, "name")));
    bool preload = json_is_true(json_object_get(req, "preload")); /* a new fork server, with the first instance */
    json_decref(req);
    json_t *r = NULL;
    int rc = ask(sock, json_pack("{s:s,s:s}", "cmd", "status", "name", name), &r);
    if (rc != EXIT_OK)
        return rc;
    json_t *workers = json_object_get(r, "workers");
    size_t total = json_array_size(workers);
    step *steps = calloc(total ? total : 1, sizeof *steps);
    if (!steps) {
        fprintf(stderr, "hyphactl: out of memory\n");
        json_decref(r);
        return EXIT_FAIL;
    }
    for (size_t i = 0; i < total; i++) {
        json_t *w = json_array_get(workers, i);
        snprintf(steps[i].label, sizeof steps[i].label, "%s[%lld]", json_string_value(json_object_get(w, "worker")),
                 (long long)json_integer_value(json_object_get(w, "instance")));
        steps[i].old_pid = json_integer_value(json_object_get(w, "pid"));
    }
    json_decref(r);
    char why[512];
    size_t done = 0;
    for (; done < total; done++) {
        if ((rc = roll_one(sock, &steps[done], preload && done == 0, timeout_s, why, sizeof why)) != EXIT_OK)
            break;
        if (!json_out) {
            printf("%-24s pid %lld -> %lld, ready after %.2fs\n", steps[done].label, (long long)steps[done].old_pid,
                   (long long)steps[done].pid, steps[done].took_s);
            fflush(stdout);
        }
    }
    report(steps, done, total, name, rc == EXIT_OK ? NULL : why, json_out);
    free(steps);
    return rc;
}
