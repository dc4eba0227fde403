/* test_route.c - the route table and the publish checks (hypha/route.h):
 * routes built from fixed and run-time subscriptions (one sink per route
 * however often it is listed, subscriber order kept), subscription changes,
 * the sorted-id helpers, and the outbound and inbound checks against the
 * Mycelium example contracts, with the one-entry cache answering as an
 * uncached check would. Pure: nothing is written anywhere. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/route.h"
#include "hypha/schema.h"
#include "hypha/sink.h"
#include "logcap.h"
#include "testdir.h"

/* The route table only keeps sink pointers: these are never used as sinks. */
static hy_sink sink_a, sink_b, sink_c;

static hy_schema *schema;
static char base_dir[PATH_MAX];
static logcap logs;

static int setup(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];
    if (hy_test_mkdtemp("route", base_dir) < 0 ||
        hy_test_copy_vector(base_dir, "mycelium-examples.contracts.yaml", "contracts.yaml") < 0)
        return -1;
    snprintf(path, sizeof path, "%s/contracts.yaml", base_dir);
    hy_err err = {{0}};
    if (!(schema = hy_schema_load(path, &err))) {
        fprintf(stderr, "schema: %s\n", err.msg);
        return -1;
    }
    log_capture(&logs); /* drops log: keep it off the test's output */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    log_release(&logs);
    hy_schema_free(schema);
    return hy_test_rmtree(base_dir);
}

/* Link subs[0..n) into a list, in that order. */
static const hy_sub *link_subs(hy_sub *subs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        subs[i].prev = i ? &subs[i - 1] : NULL;
        subs[i].next = i + 1 < n ? &subs[i + 1] : NULL;
    }
    return n ? &subs[0] : NULL;
}

static void assert_route(const hy_routes *t, uint16_t type, hy_sink *const *want, size_t n)
{
    const hy_route *r = hy_routes_find(t, type);
    if (!n) {
        assert_null(r);
        return;
    }
    assert_non_null(r);
    assert_int_equal(r->type_id, type);
    assert_int_equal(r->n, n);
    for (size_t i = 0; i < n; i++)
        assert_ptr_equal(r->sinks[i], want[i]);
}

/* ---- the table ---------------------------------------------------------------- */

static void test_build_fixed_and_runtime(void **state)
{
    (void)state;
    static const uint16_t fa[] = {1001, 1002};
    static const uint16_t fb[] = {1002};
    uint16_t ia[] = {1002, 1003}; /* a also asked for 1002 at run time */
    uint16_t ic[] = {5, 1003};
    hy_sub subs[3] = {
        {.sink = &sink_a, .fixed = fa, .nfixed = 2, .ids = ia, .nids = 2},
        {.sink = &sink_b, .fixed = fb, .nfixed = 1},
        {.sink = &sink_c, .ids = ic, .nids = 2},
    };
    hy_routes t = {0};
    assert_int_equal(hy_routes_build(&t, link_subs(subs, 3)), 0);
    assert_int_equal(t.n, 4);
    for (size_t i = 1; i < t.n; i++) /* sorted by type */
        assert_true(t.r[i - 1].type_id < t.r[i].type_id);
    assert_route(&t, 5, (hy_sink *[]){&sink_c}, 1);
    assert_route(&t, 1001, (hy_sink *[]){&sink_a}, 1);
    assert_route(&t, 1002, (hy_sink *[]){&sink_a, &sink_b}, 2); /* a once */
    assert_route(&t, 1003, (hy_sink *[]){&sink_a, &sink_c}, 2);
    assert_route(&t, 1004, NULL, 0);
    assert_route(&t, 0, NULL, 0);
    assert_route(&t, 4, NULL, 0);
    assert_route(&t, 65535, NULL, 0);

    /* subscriber order is delivery order */
    hy_sub rev[3] = {subs[2], subs[1], subs[0]};
    assert_int_equal(hy_routes_build(&t, link_subs(rev, 3)), 0); /* rebuilt over the old one */
    assert_route(&t, 1002, (hy_sink *[]){&sink_b, &sink_a}, 2);
    assert_route(&t, 1003, (hy_sink *[]){&sink_c, &sink_a}, 2);
    hy_routes_free(&t);
    assert_int_equal(t.n, 0);
    assert_null(hy_routes_find(&t, 1001));
    hy_routes_free(&t); /* twice: harmless */
}

static void test_build_empty(void **state)
{
    (void)state;
    hy_routes t = {0};
    assert_int_equal(hy_routes_build(&t, NULL), 0);
    assert_int_equal(t.n, 0);
    assert_null(hy_routes_find(&t, 1001));
    /* subscribers that subscribe to nothing */
    hy_sub subs[2] = {{.sink = &sink_a}, {.sink = &sink_b}};
    assert_int_equal(hy_routes_build(&t, link_subs(subs, 2)), 0);
    assert_int_equal(t.n, 0);
    /* a table that had routes, rebuilt from nothing: empty */
    static const uint16_t f1[] = {1001};
    subs[0].fixed = f1;
    subs[0].nfixed = 1;
    assert_int_equal(hy_routes_build(&t, link_subs(subs, 2)), 0);
    assert_int_equal(t.n, 1);
    subs[0].nfixed = 0;
    assert_int_equal(hy_routes_build(&t, link_subs(subs, 2)), 0);
    assert_int_equal(t.n, 0);
    assert_null(hy_routes_find(&t, 1001));
    hy_routes_free(&t);
}

static void test_build_many(void **state)
{
    (void)state;
    /* 20 subscribers over 300 types, each type i to subscribers i%20 and
     * (i*7)%20, some both fixed and at run time */
    enum { NS = 20, NT = 300 };
    hy_sink *sinks = calloc(NS, sizeof *sinks);
    hy_sub subs[NS];
    memset(subs, 0, sizeof subs);
    uint16_t fixed[NS][NT], ids[NS][NT];
    size_t nf[NS] = {0}, ni[NS] = {0};
    for (uint16_t i = 0; i < NT; i++) {
        uint16_t type = (uint16_t)(100 + 3 * i);
        size_t x = i % NS, y = (size_t)(i * 7) % NS;
        fixed[x][nf[x]++] = type;
        ids[y][ni[y]++] = type;
    }
    for (size_t s = 0; s < NS; s++)
        subs[s] = (hy_sub){.sink = &sinks[s], .fixed = fixed[s], .nfixed = nf[s], .ids = ids[s], .nids = ni[s]};
    hy_routes t = {0};
    assert_int_equal(hy_routes_build(&t, link_subs(subs, NS)), 0);
    assert_int_equal(t.n, NT);
    for (uint16_t i = 0; i < NT; i++) {
        uint16_t type = (uint16_t)(100 + 3 * i);
        size_t x = i % NS, y = (size_t)(i * 7) % NS;
        const hy_route *r = hy_routes_find(&t, type);
        assert_non_null(r);
        if (x == y) {
            assert_int_equal(r->n, 1);
            assert_ptr_equal(r->sinks[0], &sinks[x]);
        } else {
            assert_int_equal(r->n, 2);
            assert_ptr_equal(r->sinks[0], &sinks[x < y ? x : y]);
            assert_ptr_equal(r->sinks[1], &sinks[x < y ? y : x]);
        }
        assert_null(hy_routes_find(&t, (uint16_t)(type + 1)));
    }
    hy_routes_free(&t);
    free(sinks);
}

/* ---- subscriptions ------------------------------------------------------------- */

static void assert_ids(const hy_sub *s, const uint16_t *want, size_t n)
{
    assert_int_equal(s->nids, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(s->ids[i], want[i]);
}

static void test_sub_change(void **state)
{
    (void)state;
    hy_sub s = {.sink = &sink_a};
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){3, 5, 7}, 3, true), 0);
    assert_ids(&s, (uint16_t[]){3, 5, 7}, 3);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){1, 5, 9}, 3, true), 0); /* 5 already there */
    assert_ids(&s, (uint16_t[]){1, 3, 5, 7, 9}, 5);
    assert_int_equal(hy_sub_change(&s, NULL, 0, true), 0);
    assert_ids(&s, (uint16_t[]){1, 3, 5, 7, 9}, 5);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){0, 3, 9, 10}, 4, false), 0); /* 0, 10 not there */
    assert_ids(&s, (uint16_t[]){1, 5, 7}, 3);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){65535}, 1, true), 0);
    assert_ids(&s, (uint16_t[]){1, 5, 7, 65535}, 4);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){0}, 1, true), 0);
    assert_ids(&s, (uint16_t[]){0, 1, 5, 7, 65535}, 5);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){0, 1, 5, 7, 65535}, 5, false), 0);
    assert_int_equal(s.nids, 0);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){4}, 1, false), 0); /* from nothing */
    assert_int_equal(s.nids, 0);
    assert_int_equal(hy_sub_change(&s, (uint16_t[]){2, 4}, 2, true), 0);
    assert_ids(&s, (uint16_t[]){2, 4}, 2);
    hy_sub_clear(&s);
    assert_null(s.ids);
    assert_int_equal(s.nids, 0);
    hy_sub_clear(&s);
}

/* Random adds and removes against a bitmap. */
static void test_sub_change_random(void **state)
{
    (void)state;
    hy_sub s = {.sink = &sink_a};
    uint8_t model[64] = {0};
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int step = 0; step < 2000; step++) {
        uint16_t ids[16];
        size_t n = 0;
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        bool add = rng & 1;
        /* sorted, unique: a random start, random gaps */
        for (uint16_t id = (uint16_t)((rng >> 8) % 8); id < 64 && n < 16;
             id = (uint16_t)(id + 1 + (rng >> (id % 50)) % 7))
            ids[n++] = id;
        assert_int_equal(hy_sub_change(&s, ids, n, add), 0);
        for (size_t i = 0; i < n; i++)
            model[ids[i]] = add;
        size_t k = 0;
        for (uint16_t id = 0; id < 64; id++)
            if (model[id]) {
                assert_true(k < s.nids);
                assert_int_equal(s.ids[k], id);
                k++;
            }
        assert_int_equal(k, s.nids);
    }
    hy_sub_clear(&s);
}

/* A subscription change shows in the next build. */
static void test_sub_change_then_build(void **state)
{
    (void)state;
    static const uint16_t fa[] = {1001};
    hy_sub subs[2] = {{.sink = &sink_a, .fixed = fa, .nfixed = 1}, {.sink = &sink_b}};
    link_subs(subs, 2);
    hy_routes t = {0};
    assert_int_equal(hy_sub_change(&subs[1], (uint16_t[]){1001, 1002}, 2, true), 0);
    assert_int_equal(hy_sub_change(&subs[0], (uint16_t[]){1001}, 1, true), 0); /* fixed already */
    assert_int_equal(hy_routes_build(&t, &subs[0]), 0);
    assert_route(&t, 1001, (hy_sink *[]){&sink_a, &sink_b}, 2);
    assert_route(&t, 1002, (hy_sink *[]){&sink_b}, 1);
    /* unsubscribing what the topology subscribes leaves the fixed one */
    assert_int_equal(hy_sub_change(&subs[0], (uint16_t[]){1001}, 1, false), 0);
    assert_int_equal(hy_sub_change(&subs[1], (uint16_t[]){1001, 1002}, 2, false), 0);
    assert_int_equal(hy_routes_build(&t, &subs[0]), 0);
    assert_route(&t, 1001, (hy_sink *[]){&sink_a}, 1);
    assert_route(&t, 1002, NULL, 0);
    hy_routes_free(&t);
    hy_sub_clear(&subs[0]);
    hy_sub_clear(&subs[1]);
}

/* ---- sorted ids ----------------------------------------------------------------- */

static void test_ids_sort_unique(void **state)
{
    (void)state;
    uint16_t a[] = {5, 1, 5, 3, 1, 65535, 0, 3, 65535};
    size_t n = hy_ids_sort_unique(a, 9);
    assert_int_equal(n, 5);
    assert_memory_equal(a, ((uint16_t[]){0, 1, 3, 5, 65535}), 5 * sizeof(uint16_t));
    uint16_t b[] = {7, 7, 7, 7};
    assert_int_equal(hy_ids_sort_unique(b, 4), 1);
    assert_int_equal(b[0], 7);
    assert_int_equal(hy_ids_sort_unique(NULL, 0), 0);
    uint16_t c[] = {42};
    assert_int_equal(hy_ids_sort_unique(c, 1), 1);
    assert_int_equal(c[0], 42);
    uint16_t d[] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    assert_int_equal(hy_ids_sort_unique(d, 10), 10);
    for (uint16_t i = 0; i < 10; i++)
        assert_int_equal(d[i], i);
    /* large values sort as unsigned */
    uint16_t e[] = {40000, 1, 32768, 32767};
    assert_int_equal(hy_ids_sort_unique(e, 4), 4);
    assert_memory_equal(e, ((uint16_t[]){1, 32767, 32768, 40000}), 4 * sizeof(uint16_t));
}

static void test_ids_have(void **state)
{
    (void)state;
    const uint16_t a[] = {0, 1, 3, 5, 1000, 32768, 65535};
    for (size_t i = 0; i < 7; i++)
        assert_true(hy_ids_have(a, 7, a[i]));
    const uint16_t absent[] = {2, 4, 6, 999, 1001, 32767, 40000, 65534};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
        assert_false(hy_ids_have(a, 7, absent[i]));
    assert_false(hy_ids_have(NULL, 0, 0));
    assert_false(hy_ids_have(a, 0, 0)); /* n is honoured */
    assert_false(hy_ids_have(a, 3, 5));
    assert_true(hy_ids_have(a, 4, 5));
    /* every id of a long array, and the gaps */
    uint16_t many[500];
    for (uint16_t i = 0; i < 500; i++)
        many[i] = (uint16_t)(2 * i + 1);
    for (uint16_t v = 0; v < 1002; v++)
        assert_int_equal(hy_ids_have(many, 500, v), v % 2 == 1 && v < 1000);
}

/* ---- the checks ------------------------------------------------------------------ */

static uint32_t size_of(uint16_t type)
{
    const hy_message *m = hy_schema_find(schema, type);
    assert_non_null(m);
    return m->size;
}

static void test_check_out(void **state)
{
    (void)state;
    uint16_t pub[] = {1002, 1003};
    hy_worker_spec w = {.name = "w", .publish_all = false, .publish = pub, .npublish = 2};
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    hy_pubcheck c = {0};
    hy_frame f = {.type = 1002, .len = size_of(1002)};
    assert_true(hy_route_check_out(&c, schema, &w, &f, &d));
    assert_int_equal(hy_drops_total(&d), 0);
    /* not in its publish list */
    f = (hy_frame){.type = 1001, .len = size_of(1001)};
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    assert_int_equal(d.n[HY_DROP_NOT_ALLOWED], 1);
    /* wrong size, either way */
    f = (hy_frame){.type = 1003, .len = size_of(1003) - 1};
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    f.len = size_of(1003) + 1;
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    f.len = 0;
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    assert_int_equal(d.n[HY_DROP_WRONG_SIZE], 3);
    f.len = size_of(1003);
    assert_true(hy_route_check_out(&c, schema, &w, &f, &d));
    /* unknown type, and the reserved control type */
    f = (hy_frame){.type = 1004, .len = 16};
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    f = (hy_frame){.type = 0, .len = 16};
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    assert_int_equal(d.n[HY_DROP_UNKNOWN_TYPE], 2);
    /* a wrong size of a type it may not publish: counted once */
    f = (hy_frame){.type = 1001, .len = 1};
    assert_false(hy_route_check_out(&c, schema, &w, &f, &d));
    assert_int_equal(d.n[HY_DROP_WRONG_SIZE] + d.n[HY_DROP_NOT_ALLOWED], 3 + 1 + 1);
    assert_int_equal(hy_drops_total(&d), 7);

    /* `publish` absent: every contract type */
    hy_worker_spec all = {.name = "all", .publish_all = true};
    hy_pubcheck c2 = {0};
    hy_drops d2;
    hy_drops_init(&d2, "router", "worker", "all", "instance", "0");
    for (uint16_t t = 1001; t <= 1003; t++) {
        f = (hy_frame){.type = t, .len = size_of(t)};
        assert_true(hy_route_check_out(&c2, schema, &all, &f, &d2));
    }
    f = (hy_frame){.type = 1004, .len = 16};
    assert_false(hy_route_check_out(&c2, schema, &all, &f, &d2));
    assert_int_equal(d2.n[HY_DROP_UNKNOWN_TYPE], 1);
    assert_int_equal(hy_drops_total(&d2), 1);
}

/* The cached check answers what a fresh check answers, and counts the
 * same, whatever the sequence of frames. */
static void test_check_out_cache_same_as_uncached(void **state)
{
    (void)state;
    uint16_t pub[] = {1001, 1003};
    hy_worker_spec w = {.name = "w", .publish_all = false, .publish = pub, .npublish = 2};
    const uint16_t types[] = {1001, 1002, 1003, 1004, 0, 65535};
    hy_drops dc, du;
    hy_drops_init(&dc, "router", "worker", "w", "instance", "0");
    hy_drops_init(&du, "router", "worker", "w", "instance", "1");
    hy_pubcheck cached = {0};
    uint64_t rng = 0x2545F4914F6CDD1Dull;
    int accepted = 0;
    uint16_t type = 1001;
    for (int i = 0; i < 20000; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        /* runs of one type are common: change type 1 time in 4 */
        if (rng % 4 == 0)
            type = types[(rng >> 8) % 6];
        const hy_message *m = hy_schema_find(schema, type);
        uint32_t len = m ? m->size : 16;
        switch ((rng >> 16) % 5) {
        case 0: len = len ? len - 1 : 1; break;
        case 1: len++; break;
        default: break;
        }
        hy_frame f = {.type = type, .len = len};
        hy_pubcheck fresh = {0};
        bool a = hy_route_check_out(&cached, schema, &w, &f, &dc);
        bool b = hy_route_check_out(&fresh, schema, &w, &f, &du);
        assert_int_equal(a, b);
        accepted += a;
        for (int k = 0; k < HY_DROP__COUNT; k++)
            assert_int_equal(dc.n[k], du.n[k]);
    }
    assert_true(accepted > 0);
    assert_true(dc.n[HY_DROP_UNKNOWN_TYPE] > 0);
    assert_true(dc.n[HY_DROP_WRONG_SIZE] > 0);
    assert_true(dc.n[HY_DROP_NOT_ALLOWED] > 0);
}

/* The cache remembers one type for one worker: a frame of that type with
 * the wrong size, then the right one, then another type. */
static void test_check_out_cache_transitions(void **state)
{
    (void)state;
    uint16_t pub[] = {1002};
    hy_worker_spec w = {.name = "w", .publish_all = false, .publish = pub, .npublish = 1};
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    hy_pubcheck c = {0};
    hy_frame ok = {.type = 1002, .len = size_of(1002)};
    hy_frame bad = {.type = 1002, .len = size_of(1002) + 8};
    hy_frame other = {.type = 1001, .len = size_of(1001)};
    hy_frame unknown = {.type = 7, .len = 16};
    assert_false(hy_route_check_out(&c, schema, &w, &bad, &d));  /* first look-up, wrong size */
    assert_true(hy_route_check_out(&c, schema, &w, &ok, &d));    /* cached, right size */
    assert_false(hy_route_check_out(&c, schema, &w, &bad, &d));  /* cached, wrong size */
    assert_false(hy_route_check_out(&c, schema, &w, &other, &d)); /* another type: not allowed */
    assert_false(hy_route_check_out(&c, schema, &w, &other, &d)); /* cached: still not allowed */
    assert_false(hy_route_check_out(&c, schema, &w, &unknown, &d));
    assert_true(hy_route_check_out(&c, schema, &w, &ok, &d));
    assert_false(hy_route_check_out(&c, schema, &w, &unknown, &d)); /* after a known type */
    assert_true(hy_route_check_out(&c, schema, &w, &ok, &d));
    assert_int_equal(d.n[HY_DROP_WRONG_SIZE], 2);
    assert_int_equal(d.n[HY_DROP_NOT_ALLOWED], 2);
    assert_int_equal(d.n[HY_DROP_UNKNOWN_TYPE], 2);
    assert_int_equal(hy_drops_total(&d), 6);
}

static void test_check_in(void **state)
{
    (void)state;
    hy_drops d;
    hy_drops_init(&d, "relay", "from", "bus", NULL, NULL);
    for (uint16_t t = 1001; t <= 1003; t++) {
        hy_frame f = {.type = t, .len = size_of(t)};
        assert_true(hy_route_check_in(schema, &f, &d)); /* no publish list inbound */
    }
    assert_int_equal(hy_drops_total(&d), 0);
    hy_frame f = {.type = 1002, .len = size_of(1002) - 1};
    assert_false(hy_route_check_in(schema, &f, &d));
    f.len = size_of(1002) + 1;
    assert_false(hy_route_check_in(schema, &f, &d));
    assert_int_equal(d.n[HY_DROP_WRONG_SIZE], 2);
    f = (hy_frame){.type = 999, .len = 16};
    assert_false(hy_route_check_in(schema, &f, &d));
    f = (hy_frame){.type = 0, .len = 0};
    assert_false(hy_route_check_in(schema, &f, &d));
    assert_int_equal(d.n[HY_DROP_UNKNOWN_TYPE], 2);
    assert_int_equal(hy_drops_total(&d), 4);
}

/* A control frame is refused inbound even if a schema had a type 0 (the
 * loader refuses one; this schema is made by hand). */
static void test_check_in_control_refused(void **state)
{
    (void)state;
    hy_message *msgs = calloc(schema->nmsgs + 1, sizeof *msgs);
    assert_non_null(msgs);
    msgs[0] = schema->msgs[0];
    msgs[0].type_id = HY_TLV_CONTROL_TYPE;
    memcpy(msgs + 1, schema->msgs, schema->nmsgs * sizeof *msgs);
    hy_schema fake = {.msgs = msgs, .nmsgs = schema->nmsgs + 1};
    assert_non_null(hy_schema_find(&fake, 0));
    hy_drops d;
    hy_drops_init(&d, "relay", "from", "bus", NULL, NULL);
    hy_frame f = {.type = 0, .len = msgs[0].size};
    assert_false(hy_route_check_in(&fake, &f, &d));
    assert_int_equal(d.n[HY_DROP_UNKNOWN_TYPE], 1);
    f = (hy_frame){.type = 1002, .len = size_of(1002)};
    assert_true(hy_route_check_in(&fake, &f, &d)); /* the others still pass */
    free(msgs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_fixed_and_runtime),
        cmocka_unit_test(test_build_empty),
        cmocka_unit_test(test_build_many),
        cmocka_unit_test(test_sub_change),
        cmocka_unit_test(test_sub_change_random),
        cmocka_unit_test(test_sub_change_then_build),
        cmocka_unit_test(test_ids_sort_unique),
        cmocka_unit_test(test_ids_have),
        cmocka_unit_test(test_check_out),
        cmocka_unit_test(test_check_out_cache_same_as_uncached),
        cmocka_unit_test(test_check_out_cache_transitions),
        cmocka_unit_test(test_check_in),
        cmocka_unit_test(test_check_in_control_refused),
    };
    return cmocka_run_group_tests_name("route", tests, setup, teardown);
}
