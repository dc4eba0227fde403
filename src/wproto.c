/* wproto.c - the control frames between hyphad and a worker (type id 0,
 * one JSON object each; docs/design.md "Worker stdio"): hello, ready,
 * heartbeat, subscribe and unsubscribe from the worker; welcome and
 * shutdown to it. Control frames never leave hyphad.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hypha/decode.h"
#include "hypha/log.h"
#include "instance.h"

#define COMP "supervisor"

static void send_control(hy_instance *in, const char *json)
{
    /* Its stdin is closed (being stopped): nothing can reach it. */
    uint8_t frame[HY_TLV_HEADER + 1024];
    size_t len = hy_tlv_encode(frame, sizeof frame, HY_TLV_CONTROL_TYPE, json, (uint32_t)strlen(json));
    if (len)
        hy_sink_push_control(&in->in, frame, len);
}

size_t hy_wproto_send_shutdown(hy_instance *in)
{
    /* Never inside a frame that is half written: then EOF alone says it. */
    if (in->in.fd < 0 || !hy_fanq_at_boundary(&in->in.q))
        return 0;
    if (!in->in.hold) /* held: what waits is the next process's */
        hy_sink_clear(&in->in, HY_DROP_EXITED);
    char json[64];
    int n = snprintf(json, sizeof json, "{\"op\":\"shutdown\",\"grace_ms\":%" PRIu64 "}",
                     in->spec->policy.stop_grace_ms);
    uint8_t frame[HY_TLV_HEADER + 64];
    size_t len = hy_tlv_encode(frame, sizeof frame, HY_TLV_CONTROL_TYPE, json, (uint32_t)n);
    /* Best effort: a full pipe means the worker is not reading; EOF follows. */
    ssize_t w = write(in->in.fd, frame, len);
    return w > 0 ? (size_t)w : 0;
}

/* What one control frame may hold, so that one frame holds the loop for a
 * few milliseconds at most (about 2 ms: docs/routing.md), whatever a worker
 * writes. A frame over a cap is refused whole: a protocol error, nothing
 * applied. */
#define MAX_BYTES 65536u              /* its payload: jansson parses ~25-90 ns a byte */
#define MAX_TYPES 4096u               /* entries in one type list (subscribe, hello) */
#define MAX_VALUES (MAX_TYPES + 64u)  /* JSON values at any depth: ~200 ns each */
#define UNKNOWN_NAMED 3               /* unknown types named in the frame's one line */

/* A bound on the JSON values in p: 1 + the commas and opened containers
 * outside strings (every container's values but its first follow a comma).
 * Stops counting past `limit`. Bytes, no allocation: microseconds. */
static size_t values_bound(const uint8_t *p, size_t n, size_t limit)
{
    size_t v = 1;
    bool in_str = false;
    for (size_t i = 0; i < n && v <= limit; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ',' || c == '[' || c == '{') {
            v++;
        }
    }
    return v;
}

/* A warning about this worker's control frames: logged at the 1st, 10th,
 * 100th ... of its kind (per instance), saying how many there were. Up to
 * three more key/value pairs; a NULL key ends them. */
static void warn(hy_instance *in, hy_wproto_warn kind, hy_log_level level, const char *msg, const char *k1,
                 const char *v1, const char *k2, const char *v2, const char *k3, const char *v3)
{
    uint64_t suppressed;
    if (!hy_warn_mark(&in->wwarn[kind], &suppressed))
        return;
    hy_log(level, COMP, msg, "worker", in->name, "instance", in->idx, "total", HY_U64(in->wwarn[kind].total),
           "suppressed", HY_U64(suppressed), k1, v1, k2, v2, k3, v3, NULL);
}

/* Type names or ids from a control frame, resolved against the schema,
 * sorted and unique. Unknown entries are skipped, and named (the first few,
 * and how many) in one line for the frame. A list that is not an array or
 * is over MAX_TYPES refuses the frame: 1 (a protocol error, logged). -1 on
 * ENOMEM, 0 otherwise. */
static int parse_types(hy_instance *in, json_t *list, const char *op, uint16_t **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!list)
        return 0;
    if (!json_is_array(list) || json_array_size(list) > MAX_TYPES) {
        in->protocol_errors++;
        if (!json_is_array(list))
            warn(in, HY_WW_LIST, HY_WARN, "control frame: the type list is not an array: refused", "op", op, NULL,
                 NULL, NULL, NULL);
        else
            warn(in, HY_WW_LIST, HY_WARN, "control frame: the type list is over the cap: refused", "op", op,
                 "entries", HY_U64(json_array_size(list)), "cap", HY_U64(MAX_TYPES));
        return 1;
    }
    size_t n = json_array_size(list);
    if (n == 0)
        return 0;
    uint16_t *ids = calloc(n, sizeof *ids);
    if (!ids)
        return -1;
    size_t k = 0, unknown = 0;
    char named[UNKNOWN_NAMED * (HY_LOG_CUT / 2 + 5)] = "";
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        const hy_message *m = hy_decode_type(in->sup->topo->schema, v);
        if (m) {
            ids[k++] = m->type_id;
            continue;
        }
        if (unknown++ >= UNKNOWN_NAMED)
            continue;
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        char cut[HY_LOG_CUT / 2 + 4];
        hy_log_cut(cut, HY_LOG_CUT / 2, txt ? txt : "?", txt ? strlen(txt) : 1);
        used += (size_t)snprintf(named + used, sizeof named - used, "%s%s", used ? "," : "", cut);
        free(txt);
    }
    if (unknown)
        warn(in, HY_WW_UNKNOWN_TYPES, HY_WARN, "control frame names a type the schema does not have: ignored", "op",
             op, "type", named, "unknown", HY_U64(unknown));
    *out = ids;
    *nout = hy_ids_sort_unique(ids, k);
    return 0;
}

/* Run-time subscriptions: add (hello, subscribe) or remove (unsubscribe).
 * False when the frame was refused: nothing changed. */
static bool change_subs(hy_instance *in, json_t *list, const char *op, bool add, bool afresh)
{
    uint16_t *ids;
    size_t n;
    int r = parse_types(in, list, op, &ids, &n);
    if (r > 0)
        return false;
    if (r == 0 && afresh)
        hy_sub_clear(&in->sub);
    if (r < 0 || hy_sub_change(&in->sub, ids, n, add) < 0)
        hy_log(HY_ERROR, COMP, "out of memory changing subscriptions", "worker", in->name, "instance", in->idx,
               NULL);
    free(ids);
    hy_bus_subs_changed(&in->sup->relay.bus);
    return true;
}

static void send_welcome(hy_instance *in)
{
    const hy_schema *schema = in->sup->topo->schema;
    /* The worker's name is a YAML key: jansson escapes it. */
    json_t *w = json_pack("{s:s, s:s, s:i, s:s}", "op", "welcome", "worker", in->name, "instance",
                          (json_int_t)in->index, "schema", schema->digest_hex);
    uint64_t hb = in->spec->policy.heartbeat_timeout_ms;
    if (w && hb)
        json_object_set_new(w, "heartbeat_ms", json_integer((json_int_t)(hb / 3 ? hb / 3 : 1)));
    char *text = w ? json_dumps(w, JSON_COMPACT) : NULL;
    if (text)
        send_control(in, text);
    free(text);
    json_decref(w);
}

/* hello: check the schema, take its subscriptions, answer welcome. A
 * refused subscription list refuses the hello: no welcome. */
static void on_hello(hy_instance *in, json_t *j)
{
    const hy_schema *schema = in->sup->topo->schema;
    json_t *dj = json_object_get(j, "schema");
    const char *digest = json_string_value(dj);
    if (digest && *digest && strcmp(digest, schema->digest_hex) != 0) {
        char cut[HY_LOG_CUT + 4]; /* a digest is 64 hex digits: whole */
        warn(in, HY_WW_SCHEMA, HY_ERROR, "worker runs another schema: stopping it", "worker_schema",
             hy_log_cut(cut, HY_LOG_CUT, digest, json_string_length(dj)), "schema", schema->digest_hex, NULL, NULL);
        hy_inst_kill_for(in, HY_EXIT_SCHEMA);
        return;
    }
    if (change_subs(in, json_object_get(j, "subscribe"), "hello", true, true)) /* a hello starts afresh */
        send_welcome(in);
}

/* stats: the SDK's count of handler failures, against what hyphad wrote
 * it (health says degraded when nearly every message fails). */
static void on_stats(hy_instance *in, json_t *j)
{
    json_t *jf = json_object_get(j, "failed");
    if (!json_is_integer(jf) || json_integer_value(jf) < 0) {
        in->protocol_errors++;
        warn(in, HY_WW_MALFORMED, HY_WARN, "malformed control frame", "why", "stats without a count in 'failed'",
             NULL, NULL, NULL, NULL);
        return;
    }
    hy_failstreak_report(&in->fails, (uint64_t)json_integer_value(jf), in->in.frames, ev_now(in->sup->loop));
}

void hy_wproto_on_frame(hy_instance *in, const hy_frame *f)
{
    /* The caps first, on bytes: jansson never sees an oversized frame. */
    bool too_long = f->len > MAX_BYTES;
    if (too_long || values_bound(f->payload, f->len, MAX_VALUES) > MAX_VALUES) {
        in->protocol_errors++;
        warn(in, HY_WW_TOO_LARGE, HY_WARN, "control frame too large: refused", "bytes", HY_U64(f->len), "why",
             too_long ? "over the size cap" : "over the JSON value cap", "cap",
             HY_U64(too_long ? MAX_BYTES : MAX_VALUES));
        return;
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)f->payload, f->len, 0, &jerr);
    json_t *oj = j ? json_object_get(j, "op") : NULL;
    const char *op = json_string_value(oj);
    if (!op) {
        in->protocol_errors++;
        char why[HY_LOG_CUT + 4];
        warn(in, HY_WW_MALFORMED, HY_WARN, "malformed control frame", "why",
             j ? "no op" : hy_log_cut(why, HY_LOG_CUT, jerr.text, strlen(jerr.text)), NULL, NULL, NULL, NULL);
    } else if (strcmp(op, "hello") == 0) {
        on_hello(in, j);
    } else if (strcmp(op, "ready") == 0) {
        hy_inst_ready(in, "ready frame");
    } else if (strcmp(op, "heartbeat") == 0) {
        hy_inst_heartbeat(in);
    } else if (strcmp(op, "stats") == 0) {
        on_stats(in, j);
    } else if (strcmp(op, "subscribe") == 0 || strcmp(op, "unsubscribe") == 0) {
        change_subs(in, json_object_get(j, "types"), op, op[0] == 's', false);
    } else {
        in->protocol_errors++;
        size_t len = json_string_length(oj);
        char cut[HY_LOG_CUT + 4];
        warn(in, HY_WW_UNKNOWN_OP, HY_WARN, "unknown control op: ignored", "op", hy_log_cut(cut, HY_LOG_CUT, op, len),
             len > HY_LOG_CUT ? "op_bytes" : NULL, HY_U64(len), NULL, NULL);
    }
    json_decref(j);
}
