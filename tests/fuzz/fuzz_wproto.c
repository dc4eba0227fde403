/* fuzz_wproto.c - a worker's control frames (type 0, one JSON object each:
 * hello, ready, heartbeat, stats, subscribe, unsubscribe, anything else) through
 * hy_wproto_on_frame, as risk[0] of a real supervisor (fixture.h) sends
 * them; its stdin is a sink on /dev/null, so a welcome is queued (never
 * written). After every frame:
 *   - its run-time subscriptions are sorted, unique, and types of the schema;
 *   - a protocol error is counted at most once, with one warning of the
 *     four kinds that are protocol errors, and the frame changes nothing;
 *   - a frame the oracle finds wrong (not JSON, not an object with a string
 *     op, an unknown op, a type list that is not an array or has over 4096
 *     entries, over 64 KiB) is such a protocol error; one it finds right is
 *     taken, or refused only by the cap on JSON values;
 *   - a frame taken does what the oracle says: a hello sets its list afresh
 *     and is welcomed, unless it names another schema (then the instance is
 *     killed for that, nothing else); subscribe adds, unsubscribe removes;
 *     ready makes a starting instance running; heartbeat is noted; stats
 *     (with a count `failed` >= 0, else malformed) changes none of that;
 *     entries the schema lacks make one warning for the frame.
 * The oracle reads the frame with jansson and hy_decode_type and keeps the
 * subscriptions as a bit set, not with wproto.c's code.
 *
 * Input: byte 0: bit 0 the instance is starting (else running), bit 1 the
 * first frame is padded to the 64 KiB cap (fuzz_pad, byte 1 says where);
 * bytes 2..: frames, one per line. */
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "hypha/decode.h"
#include "instance.h"

#define MAX_BYTES 65536u /* wproto.c's caps */
#define MAX_TYPES 4096u
#define SET_BYTES 8192u  /* a bit per type id */

static hy_sup *sup;
static hy_instance *in;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sup = fuzz_sup_new();
    in = sup->inst[0];
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    hy_sink_set_fd(&in->in, fd, false);
    return 0;
}

/* ---- the oracle ---------------------------------------------------------------- */

typedef enum verdict { WRONG, TAKEN } verdict;

typedef struct expect {
    verdict v;
    hy_wproto_warn kind;  /* WRONG: the protocol error's warning */
    uint8_t subs[SET_BYTES]; /* TAKEN: the subscriptions after it */
    bool welcome, killed, ready, heartbeat, unknown_types;
} expect;

static void set_bit(uint8_t *set, uint16_t id, bool on)
{
    if (on)
        set[id >> 3] |= (uint8_t)(1u << (id & 7));
    else
        set[id >> 3] &= (uint8_t)~(1u << (id & 7));
}

static void subs_set(const hy_sub *s, uint8_t set[SET_BYTES])
{
    memset(set, 0, SET_BYTES);
    for (size_t i = 0; i < s->nids; i++)
        set_bit(set, s->ids[i], true);
}

/* A type list into e->subs (add or remove); false if it is not one. */
static bool apply_list(const json_t *list, bool add, expect *e)
{
    if (!list)
        return true;
    if (!json_is_array(list) || json_array_size(list) > MAX_TYPES)
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const hy_message *m = hy_decode_type(sup->topo->schema, v);
        if (m)
            set_bit(e->subs, m->type_id, add);
        else
            e->unknown_types = true;
    }
    return true;
}

static verdict wrong(expect *e, hy_wproto_warn kind)
{
    e->kind = kind;
    return e->v = WRONG;
}

static verdict hello(const json_t *j, expect *e)
{
    const char *digest = json_string_value(json_object_get(j, "schema"));
    if (digest && *digest && strcmp(digest, sup->topo->schema->digest_hex) != 0) {
        e->killed = true;
        subs_set(&in->sub, e->subs);
        return e->v = TAKEN;
    }
    memset(e->subs, 0, SET_BYTES);
    if (!apply_list(json_object_get(j, "subscribe"), true, e))
        return wrong(e, HY_WW_LIST);
    e->welcome = true;
    return e->v = TAKEN;
}

/* What the frame should do, judged from the frame alone. */
static verdict judge(const uint8_t *p, size_t n, bool starting, expect *e)
{
    memset(e, 0, sizeof *e);
    if (n > MAX_BYTES)
        return wrong(e, HY_WW_TOO_LARGE);
    json_t *j = json_loadb((const char *)p, n, 0, NULL);
    const char *op = json_string_value(json_object_get(j, "op"));
    subs_set(&in->sub, e->subs);
    e->v = TAKEN;
    if (!op)
        wrong(e, HY_WW_MALFORMED);
    else if (strcmp(op, "hello") == 0)
        hello(j, e);
    else if (strcmp(op, "subscribe") == 0 || strcmp(op, "unsubscribe") == 0) {
        if (!apply_list(json_object_get(j, "types"), op[0] == 's', e))
            wrong(e, HY_WW_LIST);
    } else if (strcmp(op, "ready") == 0)
        e->ready = starting;
    else if (strcmp(op, "heartbeat") == 0)
        e->heartbeat = true;
    else if (strcmp(op, "stats") == 0) { /* the SDK's failing-handler count: noted, nothing else changes */
        json_t *jf = json_object_get(j, "failed");
        if (!json_is_integer(jf) || json_integer_value(jf) < 0)
            wrong(e, HY_WW_MALFORMED);
    } else
        wrong(e, HY_WW_UNKNOWN_OP);
    json_decref(j);
    return e->v;
}

/* ---- the checks ------------------------------------------------------------------ */

static uint64_t error_warnings(void)
{
    return in->wwarn[HY_WW_MALFORMED].total + in->wwarn[HY_WW_TOO_LARGE].total + in->wwarn[HY_WW_UNKNOWN_OP].total +
           in->wwarn[HY_WW_LIST].total;
}

static void check_subs(void)
{
    for (size_t i = 0; i < in->sub.nids; i++)
        if ((i && in->sub.ids[i] <= in->sub.ids[i - 1]) || !hy_schema_find(sup->topo->schema, in->sub.ids[i]))
            abort(); /* not sorted-unique, or not a type of the schema */
}

/* A frame refused: counted once, as one warning, and nothing changed. */
static void check_refused(const expect *e, const uint8_t *subs_before, hy_state was, const hy_warn_count *w)
{
    uint8_t now[SET_BYTES];
    subs_set(&in->sub, now);
    if (memcmp(now, subs_before, SET_BYTES) != 0 || in->state != was || hy_fanq_pending(&in->in.q) ||
        in->kill_reason != HY_EXIT_NONE || in->last_heartbeat != -1.0)
        abort();
    hy_wproto_warn kind = e->v == WRONG ? e->kind : HY_WW_TOO_LARGE; /* taken, but for the value cap */
    if (in->wwarn[kind].total != w[kind].total + 1 && in->wwarn[HY_WW_TOO_LARGE].total != w[HY_WW_TOO_LARGE].total + 1)
        abort();
}

/* A frame taken: what the oracle said, and only that. */
static void check_taken(const expect *e, hy_state was, const hy_warn_count *w)
{
    uint8_t now[SET_BYTES];
    subs_set(&in->sub, now);
    if (memcmp(now, e->subs, SET_BYTES) != 0)
        abort();
    if ((hy_fanq_pending(&in->in.q) > 0) != e->welcome || in->kill_reason != (e->killed ? HY_EXIT_SCHEMA : HY_EXIT_NONE))
        abort();
    if (in->state != (e->ready ? HY_ST_RUNNING : was))
        abort();
    if ((in->last_heartbeat == ev_now(sup->loop)) != e->heartbeat)
        abort();
    if (in->wwarn[HY_WW_UNKNOWN_TYPES].total != w[HY_WW_UNKNOWN_TYPES].total + e->unknown_types ||
        in->wwarn[HY_WW_SCHEMA].total != w[HY_WW_SCHEMA].total + e->killed)
        abort();
}

static void one_frame(const uint8_t *p, size_t n)
{
    static expect e;
    uint8_t before[SET_BYTES];
    hy_warn_count w[HY_WW__COUNT];
    judge(p, n, in->state == HY_ST_STARTING, &e);
    subs_set(&in->sub, before);
    memcpy(w, in->wwarn, sizeof w);
    uint64_t errors = in->protocol_errors, warned = error_warnings();
    hy_state was = in->state;
    in->kill_reason = HY_EXIT_NONE;
    in->last_heartbeat = -1.0;
    hy_frame f = {HY_TLV_CONTROL_TYPE, (uint32_t)n, p};
    hy_wproto_on_frame(in, &f);
    check_subs();
    uint64_t refused = in->protocol_errors - errors;
    if (refused > 1 || error_warnings() - warned != refused || (e.v == WRONG && !refused))
        abort();
    if (refused)
        check_refused(&e, before, was, w);
    else
        check_taken(&e, was, w);
    hy_sink_clear(&in->in, HY_DROP_EXITED); /* the welcome, read */
}

/* The instance as a fresh process has it: no run-time subscriptions, no warnings. */
static void reset(bool starting)
{
    hy_sub_clear(&in->sub);
    hy_bus_subs_changed(&sup->relay.bus);
    in->protocol_errors = 0;
    memset(in->wwarn, 0, sizeof in->wwarn);
    in->state = starting ? HY_ST_STARTING : HY_ST_RUNNING;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0], knob = data[1];
    uint8_t *own;
    size -= 2;
    const uint8_t *p = fuzz_pad(data + 2, &size, flags & 2, knob, MAX_BYTES, &own);
    reset(flags & 1);
    for (size_t off = 0; off < size;) {
        const uint8_t *nl = memchr(p + off, '\n', size - off);
        size_t n = nl ? (size_t)(nl - (p + off)) : size - off;
        one_frame(p + off, n);
        off += n + (nl ? 1 : 0);
    }
    free(own);
    return 0;
}
