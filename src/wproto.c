/* wproto.c - the control frames between hyphad and a worker (type id 0,
 * one JSON object each; ../DESIGN.md "Worker stdio"): hello, ready,
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

void hy_wproto_send_shutdown(hy_instance *in)
{
    /* Never inside a frame that is half written: then EOF alone says it. */
    if (in->in.fd < 0 || !hy_fanq_at_boundary(&in->in.q))
        return;
    hy_sink_clear(&in->in, HY_DROP_EXITED);
    char json[64];
    int n = snprintf(json, sizeof json, "{\"op\":\"shutdown\",\"grace_ms\":%" PRIu64 "}",
                     in->spec->policy.stop_grace_ms);
    uint8_t frame[HY_TLV_HEADER + 64];
    size_t len = hy_tlv_encode(frame, sizeof frame, HY_TLV_CONTROL_TYPE, json, (uint32_t)n);
    /* Best effort: a full pipe means the worker is not reading; EOF follows. */
    ssize_t w = write(in->in.fd, frame, len);
    (void)w;
}

/* Type names or ids from a control frame, resolved against the schema,
 * sorted and unique. Unknown entries are logged and skipped. -1 on ENOMEM. */
static int parse_types(hy_instance *in, json_t *list, const char *op, uint16_t **out, size_t *nout)
{
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    *out = NULL;
    *nout = 0;
    if (list && !json_is_array(list)) {
        in->protocol_errors++;
        hy_log(HY_WARN, COMP, "control frame: the type list is not an array", "worker", in->name, "instance",
               in->idx, "op", op, NULL);
    }
    if (n == 0)
        return 0;
    uint16_t *ids = calloc(n, sizeof *ids);
    if (!ids)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        const hy_message *m = hy_decode_type(in->sup->topo->schema, v);
        if (m) {
            ids[k++] = m->type_id;
            continue;
        }
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        hy_log(HY_WARN, COMP, "control frame names a type the schema does not have: ignored", "worker", in->name,
               "instance", in->idx, "op", op, "type", txt ? txt : "?", NULL);
        free(txt);
    }
    *out = ids;
    *nout = hy_ids_sort_unique(ids, k);
    return 0;
}

/* Run-time subscriptions: add (hello, subscribe) or remove (unsubscribe). */
static void change_subs(hy_instance *in, json_t *list, const char *op, bool add, bool afresh)
{
    uint16_t *ids;
    size_t n;
    if (parse_types(in, list, op, &ids, &n) < 0)
        return;
    if (afresh)
        hy_sub_clear(&in->sub);
    if (hy_sub_change(&in->sub, ids, n, add) < 0)
        hy_log(HY_ERROR, COMP, "out of memory changing subscriptions", "worker", in->name, "instance", in->idx,
               NULL);
    free(ids);
    hy_bus_subs_changed(&in->sup->relay.bus);
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

/* hello: check the schema, take its subscriptions, answer welcome. */
static void on_hello(hy_instance *in, json_t *j)
{
    const hy_schema *schema = in->sup->topo->schema;
    const char *digest = json_string_value(json_object_get(j, "schema"));
    if (digest && *digest && strcmp(digest, schema->digest_hex) != 0) {
        hy_log(HY_ERROR, COMP, "worker runs another schema: stopping it", "worker", in->name, "instance", in->idx,
               "worker_schema", digest, "schema", schema->digest_hex, NULL);
        hy_inst_kill_for(in, HY_EXIT_SCHEMA);
        return;
    }
    change_subs(in, json_object_get(j, "subscribe"), "hello", true, true); /* a hello starts afresh */
    send_welcome(in);
}

void hy_wproto_on_frame(hy_instance *in, const hy_frame *f)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)f->payload, f->len, 0, &jerr);
    const char *op = j ? json_string_value(json_object_get(j, "op")) : NULL;
    if (!op) {
        in->protocol_errors++;
        hy_log(HY_WARN, COMP, "malformed control frame", "worker", in->name, "instance", in->idx, "why",
               j ? "no op" : jerr.text, NULL);
    } else if (strcmp(op, "hello") == 0) {
        on_hello(in, j);
    } else if (strcmp(op, "ready") == 0) {
        hy_inst_ready(in, "ready frame");
    } else if (strcmp(op, "heartbeat") == 0) {
        hy_inst_heartbeat(in);
    } else if (strcmp(op, "subscribe") == 0 || strcmp(op, "unsubscribe") == 0) {
        change_subs(in, json_object_get(j, "types"), op, op[0] == 's', false);
    } else {
        in->protocol_errors++;
        hy_log(HY_WARN, COMP, "unknown control op: ignored", "worker", in->name, "instance", in->idx, "op", op, NULL);
    }
    json_decref(j);
}
