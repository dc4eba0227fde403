/* ctlupgrade.c - hyphactl's side of an in-place upgrade: the request
 * (refused at once, or under way), then `status` asked until the hyphad
 * that answers has counted one more upgrade: its outcome is the answer.
 * During the exec the control socket stays open (hyphad carries it), so a
 * connection waits in its backlog rather than failing. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctlclient.h"
#include "ctlupgrade.h"

#define REPLY_TIMEOUT_MS 5000
#define POLL_NS 5000000L /* status every 5 ms while it takes over */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(const json_t *last, json_int_t pid, double took_s, bool json_out)
{
    if (json_out) {
        bool ok = strcmp(json_string_value(json_object_get(last, "result")) ?: "", "ok") == 0;
        json_t *j = json_pack("{s:b,s:O,s:I,s:f}", "ok", ok, "upgrade", last, "pid", pid, "answered_after_s", took_s);
        char *text = json_dumps(j, JSON_COMPACT);
        printf("%s\n", text ? text : "{\"ok\":false,\"error\":\"out of memory\"}");
        free(text);
        json_decref(j);
        return;
    }
    const char *from = json_string_value(json_object_get(last, "from")) ?: "?";
    const char *to = json_string_value(json_object_get(last, "to")) ?: "?";
    if (strcmp(json_string_value(json_object_get(last, "result")) ?: "", "ok") == 0)
        printf("upgraded in place: hyphad %s -> %s, pid %lld, paused %.1f ms, answering after %.0f ms\n", from, to,
               (long long)pid, json_number_value(json_object_get(last, "pause_ms")), took_s * 1000.0);
    else
        fprintf(stderr, "hyphactl: upgrade %s: %s; hyphad %s (pid %lld) is serving as before\n",
                json_string_value(json_object_get(last, "result")) ?: "failed",
                json_string_value(json_object_get(last, "reason")) ?: "?", from, (long long)pid);
}

int hy_ctl_upgrade(const char *sock, json_t *req, double timeout_s, bool json_out)
{
    json_t *r = NULL;
    int rc = conn_ask(sock, req, &r, REPLY_TIMEOUT_MS);
    if (rc != EXIT_OK)
        return rc; /* refused, said */
    json_int_t before = json_integer_value(json_object_get(json_object_get(r, "upgrade"), "count"));
    json_decref(r);
    double t0 = now_s();
    conn_quiet = true; /* while it is being replaced a request may fail: asked again */
    while (now_s() - t0 < timeout_s) {
        json_t *st = NULL;
        if (conn_ask(sock, json_pack("{s:s,s:b}", "cmd", "status", "table", 1), &st, REPLY_TIMEOUT_MS) ==
            EXIT_OK) {
            json_t *u = json_object_get(st, "upgrade");
            if (json_integer_value(json_object_get(u, "count")) > before) {
                conn_quiet = false;
                json_t *last = json_object_get(u, "last");
                bool ok = strcmp(json_string_value(json_object_get(last, "result")) ?: "", "ok") == 0;
                say(last, json_integer_value(json_object_get(json_object_get(st, "hyphad"), "pid")), now_s() - t0,
                    json_out);
                json_decref(st);
                return ok ? EXIT_OK : EXIT_FAIL;
            }
            json_decref(st);
        }
        nanosleep(&(struct timespec){0, POLL_NS}, NULL);
    }
    conn_quiet = false;
    fprintf(stderr, "hyphactl: no hyphad answered at %s within %.0fs of the upgrade: see its log\n", sock, timeout_s);
    return EXIT_UNREACHABLE;
}
