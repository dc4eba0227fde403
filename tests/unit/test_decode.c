/* test_decode.c - hy_decode_json against Mycelium's wire vectors (every
 * message, every value exactly), and the conventions of hypha/decode.h for
 * payloads the vectors do not cover: wrong length, over-long String and Vec
 * lengths, invalid UTF-8, u64 above INT64_MAX, garbage in padding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>
#include <jansson.h>

#include "hypha/decode.h"
#include "hypha/schema.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* HYPHA_VECTORS, else tests/vectors from this file's path (the binary is
 * also run outside ctest). */
static const char *vectors_dir(void)
{
    static char dir[4096];
    const char *d = getenv("HYPHA_VECTORS");
    if (d && *d)
        return d;
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/'); /* tests/unit/test_decode.c -> tests/unit */
    if (slash)
        *slash = '\0';
    slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    size_t n = strlen(dir);
    snprintf(dir + n, sizeof dir - n, "/vectors");
    return dir;
}

static json_t *load_vectors(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/wire-vectors.json", vectors_dir());
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        fail_msg("%s: %s", path, jerr.text);
    return root;
}

static hy_schema *load_contracts(const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", vectors_dir(), file);
    hy_err err = {{0}};
    hy_schema *s = hy_schema_load(path, &err);
    if (!s)
        fail_msg("%s", err.msg);
    return s;
}

static uint8_t *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        b[i] = (uint8_t)v;
    }
    *len = n;
    return b;
}

/* Exact equality with the vectors: integers as integers, reals as reals
 * (bit-exact doubles), strings byte for byte, lists element by element.
 * Prints the first difference under `where`. */
static int same_value(const char *where, const json_t *want, const json_t *got)
{
    if (!got) {
        print_error("%s: missing\n", where);
        return 0;
    }
    if (json_is_integer(want)) {
        if (!json_is_integer(got) || json_integer_value(got) != json_integer_value(want)) {
            char *g = json_dumps(got, JSON_ENCODE_ANY);
            print_error("%s: want %" JSON_INTEGER_FORMAT ", got %s\n", where, json_integer_value(want), g);
            free(g);
            return 0;
        }
        return 1;
    }
    if (json_is_real(want)) {
        if (!json_is_real(got) || json_real_value(got) != json_real_value(want)) {
            char *g = json_dumps(got, JSON_ENCODE_ANY);
            print_error("%s: want %.17g, got %s\n", where, json_real_value(want), g);
            free(g);
            return 0;
        }
        return 1;
    }
    if (json_is_string(want)) {
        if (!json_is_string(got) || json_string_length(got) != json_string_length(want) ||
            memcmp(json_string_value(got), json_string_value(want), json_string_length(want)) != 0) {
            char *g = json_dumps(got, JSON_ENCODE_ANY);
            print_error("%s: want \"%s\", got %s\n", where, json_string_value(want), g);
            free(g);
            return 0;
        }
        return 1;
    }
    if (json_is_array(want)) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(want)) {
            char *g = json_dumps(got, JSON_ENCODE_ANY);
            print_error("%s: want a list of %zu, got %s\n", where, json_array_size(want), g);
            free(g);
            return 0;
        }
        for (size_t i = 0; i < json_array_size(want); i++) {
            char w[256];
            snprintf(w, sizeof w, "%s[%zu]", where, i);
            if (!same_value(w, json_array_get(want, i), json_array_get(got, i)))
                return 0;
        }
        return 1;
    }
    print_error("%s: unexpected kind of value in the vectors\n", where);
    return 0;
}

/* The decoded object has exactly the fields of `want`, each equal. */
static int same_object(const char *name, const json_t *want, const json_t *got)
{
    int ok = 1;
    if (!json_is_object(got)) {
        print_error("%s: not an object\n", name);
        return 0;
    }
    if (json_object_size(got) != json_object_size(want)) {
        print_error("%s: %zu fields, want %zu\n", name, json_object_size(got), json_object_size(want));
        ok = 0;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)want, key, v) {
        char where[256];
        snprintf(where, sizeof where, "%s.%s", name, key);
        if (!same_value(where, v, json_object_get(got, key)))
            ok = 0;
    }
    return ok;
}

/* The decoded object survives a trip through JSON text unchanged (it is
 * valid JSON: valid UTF-8 strings, no NaN). */
static void assert_round_trips(const json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    assert_non_null(text);
    json_error_t jerr;
    json_t *back = json_loads(text, JSON_ALLOW_NUL, &jerr);
    if (!back)
        fail_msg("decoded JSON does not parse back: %s: %s", jerr.text, text);
    assert_true(json_equal((json_t *)o, back));
    json_decref(back);
    free(text);
}

/* Every message of every vectors file, exactly its `values`. */
static void test_vectors(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    size_t ci, checked = 0, bad = 0;
    json_t *c;
    json_array_foreach(root, ci, c) {
        hy_schema *s = load_contracts(json_string_value(json_object_get(c, "contracts")));
        size_t mi;
        json_t *mv;
        json_array_foreach(json_object_get(c, "messages"), mi, mv) {
            const char *name = json_string_value(json_object_get(mv, "name"));
            const hy_message *m = hy_schema_find_name(s, name);
            assert_non_null(m);
            size_t len;
            uint8_t *p = unhex(json_string_value(json_object_get(mv, "payload_hex")), &len);
            assert_int_equal(len, m->size);
            json_t *got = hy_decode_json(m, p, (uint32_t)len);
            if (!got)
                fail_msg("%s: hy_decode_json returned NULL", name);
            if (!same_object(name, json_object_get(mv, "values"), got))
                bad++;
            assert_round_trips(got);
            json_decref(got);
            free(p);
            checked++;
        }
        hy_schema_free(s);
    }
    json_decref(root);
    assert_int_equal(bad, 0);
    assert_int_equal(checked, 11);
}

/* Wrong length: NULL, whether shorter, longer or empty. */
static void test_wrong_len(void **state)
{
    (void)state;
    hy_schema *s = load_contracts("mycelium-examples.contracts.yaml");
    const hy_message *m = hy_schema_find_name(s, "CounterUpdate");
    assert_non_null(m);
    uint8_t buf[64] = {0};
    assert_int_equal(m->size, 16);
    assert_null(hy_decode_json(m, buf, 15));
    assert_null(hy_decode_json(m, buf, 17));
    assert_null(hy_decode_json(m, buf, 0));
    assert_null(hy_decode_json(m, buf, 32));
    json_t *o = hy_decode_json(m, buf, 16);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "counter_id")), 0);
    json_decref(o);
    hy_schema_free(s);
}

static const hy_field *field_named(const hy_message *m, const char *name)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, name) == 0)
            return &m->fields[i];
    fail_msg("%s has no field %s", m->name, name);
    return NULL;
}

/* A String whose length field says more than its capacity is cut to the
 * capacity; a Vec's count likewise. */
static void test_length_over_capacity(void **state)
{
    (void)state;
    hy_schema *s = load_contracts("mycelium-examples.contracts.yaml");
    const hy_message *m = hy_schema_find_name(s, "TextMessage");
    const hy_field *sender = field_named(m, "sender");
    assert_int_equal(sender->kind, HY_FIELD_STRING);
    assert_int_equal(sender->count, 32);
    uint8_t *p = calloc(1, m->size);
    assert_non_null(p);
    /* length 0xffff, 32 bytes of capacity all 'a', the next field's
     * header and text right behind it */
    p[sender->offset] = 0xff;
    p[sender->offset + 1] = 0xff;
    memset(p + sender->offset + HY_VAR_HEADER, 'a', sender->count);
    const hy_field *content = field_named(m, "content");
    p[content->offset] = 3;
    memcpy(p + content->offset + HY_VAR_HEADER, "xyz", 3);
    json_t *o = hy_decode_json(m, p, m->size);
    assert_non_null(o);
    char want[64];
    memset(want, 'a', 32);
    want[32] = '\0';
    assert_string_equal(json_string_value(json_object_get(o, "sender")), want);
    assert_int_equal(json_string_length(json_object_get(o, "sender")), 32);
    assert_string_equal(json_string_value(json_object_get(o, "content")), "xyz");
    json_decref(o);

    /* 33 = capacity + 1: still cut to 32 */
    p[sender->offset] = 33;
    p[sender->offset + 1] = 0;
    o = hy_decode_json(m, p, m->size);
    assert_int_equal(json_string_length(json_object_get(o, "sender")), 32);
    json_decref(o);
    /* exactly the capacity */
    p[sender->offset] = 32;
    o = hy_decode_json(m, p, m->size);
    assert_string_equal(json_string_value(json_object_get(o, "sender")), want);
    json_decref(o);
    /* 0: empty */
    p[sender->offset] = 0;
    o = hy_decode_json(m, p, m->size);
    assert_string_equal(json_string_value(json_object_get(o, "sender")), "");
    json_decref(o);
    free(p);

    /* Vec<[u8; 20]> with capacity 10 and a count of 0x0102 */
    m = hy_schema_find_name(s, "BatchOperation");
    const hy_field *items = field_named(m, "items");
    assert_int_equal(items->kind, HY_FIELD_VEC);
    assert_int_equal(items->count, 10);
    assert_int_equal(items->elem_size, 20);
    p = calloc(1, m->size);
    assert_non_null(p);
    p[items->offset] = 0x02;
    p[items->offset + 1] = 0x01;
    for (uint32_t i = 0; i < items->count * items->elem_size; i++)
        p[items->offset + HY_VAR_HEADER + i] = (uint8_t)i;
    o = hy_decode_json(m, p, m->size);
    assert_non_null(o);
    json_t *list = json_object_get(o, "items");
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 10);
    assert_string_equal(json_string_value(json_array_get(list, 0)),
                        "000102030405060708090a0b0c0d0e0f10111213");
    assert_string_equal(json_string_value(json_array_get(list, 9)),
                        "b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7");
    json_decref(o);
    /* count 0: an empty list */
    p[items->offset] = 0;
    p[items->offset + 1] = 0;
    o = hy_decode_json(m, p, m->size);
    assert_true(json_is_array(json_object_get(o, "items")));
    assert_int_equal(json_array_size(json_object_get(o, "items")), 0);
    json_decref(o);
    free(p);
    hy_schema_free(s);
}

/* Invalid UTF-8 in a String: each bad byte becomes U+FFFD, the rest is
 * kept, and the result is a valid JSON string. */
static void test_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *in;
        size_t inlen;
        const char *want; /* NULL: only check validity and the U+FFFD count */
        size_t nrepl;
    } cases[] = {
        {"0xff", "a\xff" "b", 3, "a\xef\xbf\xbd" "b", 1},
        {"0xfe", "\xfe", 1, "\xef\xbf\xbd", 1},
        {"lone continuation", "x\x80y", 3, "x\xef\xbf\xbdy", 1},
        {"lead without continuation", "\xc3(", 2, "\xef\xbf\xbd(", 1},
        {"truncated at the end", "ok\xe2\x82", 4, NULL, 0},
        {"overlong slash", "\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd", 2},
        {"surrogate", "\xed\xa0\x80", 3, NULL, 0},
        {"above U+10FFFF", "\xf4\x90\x80\x80", 4, NULL, 0},
        {"valid stays", "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x8d\x84", 15,
         "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x8d\x84", 0},
        {"bad between good", "\xc3\xa9\xff\xc3\xa9", 5, "\xc3\xa9\xef\xbf\xbd\xc3\xa9", 1},
    };
    hy_schema *s = load_contracts("mycelium-examples.contracts.yaml");
    const hy_message *m = hy_schema_find_name(s, "TextMessage");
    const hy_field *sender = field_named(m, "sender");
    uint8_t *p = malloc(m->size);
    assert_non_null(p);
    size_t bad = 0;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        memset(p, 0, m->size);
        p[sender->offset] = (uint8_t)cases[i].inlen;
        memcpy(p + sender->offset + HY_VAR_HEADER, cases[i].in, cases[i].inlen);
        json_t *o = hy_decode_json(m, p, m->size);
        if (!o) {
            print_error("%s: NULL\n", cases[i].name);
            bad++;
            continue;
        }
        const json_t *v = json_object_get(o, "sender");
        if (!json_is_string(v)) {
            print_error("%s: not a string\n", cases[i].name);
            bad++;
            json_decref(o);
            continue;
        }
        const char *got = json_string_value(v);
        size_t glen = json_string_length(v);
        /* valid UTF-8 by jansson's own check */
        json_t *check = json_stringn(got, glen);
        if (!check) {
            print_error("%s: not valid UTF-8\n", cases[i].name);
            bad++;
        }
        json_decref(check);
        if (cases[i].want) {
            if (glen != strlen(cases[i].want) || memcmp(got, cases[i].want, glen) != 0) {
                char *g = json_dumps(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
                print_error("%s: got %s\n", cases[i].name, g);
                free(g);
                bad++;
            }
        } else {
            /* at least one replacement, and no raw byte >= 0xf5 or lone
             * surrogate encoding left */
            if (!strstr(got, "\xef\xbf\xbd") || strstr(got, "\xed\xa0") || strstr(got, "\xf4\x90")) {
                char *g = json_dumps(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
                print_error("%s: got %s\n", cases[i].name, g);
                free(g);
                bad++;
            }
        }
        if (cases[i].want) {
            size_t n = 0;
            for (const char *q = got; (q = strstr(q, "\xef\xbf\xbd")); q += 3)
                n++;
            if (n != cases[i].nrepl) {
                print_error("%s: %zu replacements, want %zu\n", cases[i].name, n, cases[i].nrepl);
                bad++;
            }
        }
        assert_round_trips(o);
        json_decref(o);
    }
    /* A whole capacity of bad bytes: 32 replacements, still valid. */
    memset(p, 0, m->size);
    p[sender->offset] = 32;
    memset(p + sender->offset + HY_VAR_HEADER, 0xff, 32);
    json_t *o = hy_decode_json(m, p, m->size);
    assert_non_null(o);
    assert_int_equal(json_string_length(json_object_get(o, "sender")), 32 * 3);
    assert_round_trips(o);
    json_decref(o);
    free(p);
    hy_schema_free(s);
    assert_int_equal(bad, 0);
}

/* A NUL byte is valid UTF-8 (U+0000, which a Python worker may put in a
 * str): decode.h replaces only invalid bytes, so it is kept, as JSON
 * "\u0000", not turned into U+FFFD. */
static void test_nul_in_string(void **state)
{
    (void)state;
    hy_schema *s = load_contracts("mycelium-examples.contracts.yaml");
    const hy_message *m = hy_schema_find_name(s, "TextMessage");
    const hy_field *sender = field_named(m, "sender");
    uint8_t *p = calloc(1, m->size);
    assert_non_null(p);
    p[sender->offset] = 3;
    memcpy(p + sender->offset + HY_VAR_HEADER, "a\0b", 3);
    json_t *o = hy_decode_json(m, p, m->size);
    assert_non_null(o);
    const json_t *v = json_object_get(o, "sender");
    assert_true(json_is_string(v));
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    assert_non_null(text);
    if (json_string_length(v) != 3 || memcmp(json_string_value(v), "a\0b", 3) != 0)
        fail_msg("a NUL in a String decoded as %s, expected \"a\\u0000b\"", text);
    free(text);
    assert_round_trips(o);
    json_decref(o);
    free(p);
    hy_schema_free(s);
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* u64: up to INT64_MAX a JSON integer, above it decimal text. Other scalars
 * at their extremes. */
static void test_scalar_ranges(void **state)
{
    (void)state;
    hy_schema *s = load_contracts("mycelium-examples.contracts.yaml");
    const hy_message *m = hy_schema_find_name(s, "CounterUpdate");
    uint8_t p[16] = {0};
    static const struct { uint64_t v; const char *text; } big[] = {
        {UINT64_MAX, "18446744073709551615"},
        {(uint64_t)INT64_MAX + 1, "9223372036854775808"},
        {0xfedcba9876543210ull, "18364758544493064720"},
    };
    for (size_t i = 0; i < N_ELEMS(big); i++) {
        put_le(p, big[i].v, 8);
        json_t *o = hy_decode_json(m, p, sizeof p);
        assert_non_null(o);
        json_t *v = json_object_get(o, "counter_id");
        if (!json_is_string(v))
            fail_msg("u64 %s: not given as text", big[i].text);
        assert_string_equal(json_string_value(v), big[i].text);
        json_decref(o);
    }
    put_le(p, (uint64_t)INT64_MAX, 8);
    put_le(p + 8, (uint32_t)INT32_MIN, 4);
    put_le(p + 12, (uint32_t)INT32_MAX, 4);
    json_t *o = hy_decode_json(m, p, sizeof p);
    assert_true(json_is_integer(json_object_get(o, "counter_id")));
    assert_true(json_integer_value(json_object_get(o, "counter_id")) == INT64_MAX);
    assert_int_equal(json_integer_value(json_object_get(o, "value")), INT32_MIN);
    assert_int_equal(json_integer_value(json_object_get(o, "delta")), INT32_MAX);
    json_decref(o);
    put_le(p + 8, 0xffffffffu, 4);
    o = hy_decode_json(m, p, sizeof p);
    assert_int_equal(json_integer_value(json_object_get(o, "value")), -1);
    json_decref(o);
    hy_schema_free(s);

    /* u8, u16, u32 at their maximum; f64 negative, tiny and NaN */
    hy_err err = {{0}};
    static const char yaml[] = "messages:\n  S:\n    tlv_type: 7\n    domain: X\n    fields:\n"
                               "      a: u8\n      b: u16\n      c: u32\n      d: f64\n";
    s = hy_schema_load_buffer("s.yaml", (const uint8_t *)yaml, strlen(yaml), &err);
    if (!s)
        fail_msg("%s", err.msg);
    m = &s->msgs[0];
    assert_int_equal(m->size, 16);
    uint8_t q[16] = {0};
    q[0] = 0xff;
    put_le(q + 2, 0xffff, 2);
    put_le(q + 4, 0xffffffffu, 4);
    double d = -1.0e-300;
    memcpy(q + 8, &d, 8);
    o = hy_decode_json(m, q, sizeof q);
    assert_int_equal(json_integer_value(json_object_get(o, "a")), 255);
    assert_int_equal(json_integer_value(json_object_get(o, "b")), 65535);
    assert_true(json_integer_value(json_object_get(o, "c")) == 4294967295LL);
    assert_true(json_is_real(json_object_get(o, "d")));
    assert_true(json_real_value(json_object_get(o, "d")) == d);
    json_decref(o);
    d = NAN;
    memcpy(q + 8, &d, 8);
    o = hy_decode_json(m, q, sizeof q); /* NaN has no JSON form, but the object is still made */
    assert_non_null(o);
    assert_non_null(json_object_get(o, "d"));
    assert_round_trips(o);
    json_decref(o);
    hy_schema_free(s);
}

/* Byte arrays and Vec<u8>: lowercase hex; [[u8; N]; M]: a list of M rows. */
static void test_bytes_shapes(void **state)
{
    (void)state;
    hy_err err = {{0}};
    static const char yaml[] = "messages:\n  B:\n    tlv_type: 9\n    domain: X\n    fields:\n"
                               "      grid: {type: \"[[u8; 3]; 2]\"}\n"
                               "      raw: {type: \"[u8; 5]\"}\n"
                               "      v: {type: Vec<u8>}\n"
                               "      w: {type: \"Vec<[u8; 32]>\"}\n"
                               "      big: U256\n";
    hy_schema *s = hy_schema_load_buffer("b.yaml", (const uint8_t *)yaml, strlen(yaml), &err);
    if (!s)
        fail_msg("%s", err.msg);
    const hy_message *m = &s->msgs[0];
    uint8_t *p = calloc(1, m->size);
    assert_non_null(p);
    const hy_field *grid = field_named(m, "grid"),
                   *raw = field_named(m, "raw"), *v = field_named(m, "v"), *w = field_named(m, "w"),
                   *big = field_named(m, "big");
    memcpy(p + grid->offset, "\xAB\xCD\xEF\x01\x02\x03", 6);
    memcpy(p + raw->offset, "\x00\xFF\x10\x0A\xA0", 5);
    p[v->offset] = 3;
    memcpy(p + v->offset + HY_VAR_HEADER, "\xCA\xFE\x99\x77", 4); /* 4th byte beyond count */
    p[w->offset] = 1;
    memset(p + w->offset + HY_VAR_HEADER, 0xEE, 32);
    memset(p + w->offset + HY_VAR_HEADER + 32, 0x11, 32); /* beyond count */
    for (int i = 0; i < 32; i++)
        p[big->offset + i] = (uint8_t)(0xF0 + (i & 15));
    json_t *o = hy_decode_json(m, p, m->size);
    assert_non_null(o);
    json_t *g = json_object_get(o, "grid");
    assert_true(json_is_array(g));
    assert_int_equal(json_array_size(g), 2);
    assert_string_equal(json_string_value(json_array_get(g, 0)), "abcdef");
    assert_string_equal(json_string_value(json_array_get(g, 1)), "010203");
    assert_string_equal(json_string_value(json_object_get(o, "raw")), "00ff100aa0");
    assert_string_equal(json_string_value(json_object_get(o, "v")), "cafe99");
    json_t *wl = json_object_get(o, "w");
    assert_true(json_is_array(wl));
    assert_int_equal(json_array_size(wl), 1);
    assert_string_equal(json_string_value(json_array_get(wl, 0)),
                        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
    assert_string_equal(json_string_value(json_object_get(o, "big")),
                        "f0f1f2f3f4f5f6f7f8f9fafbfcfdfefff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    json_decref(o);
    free(p);
    hy_schema_free(s);
}

/* decode.h: "a list of hex rows for [[u8; N]; M]" - M = 1 included: a
 * list of one row, not the bare hex of a [u8; N]. */
static void test_bytes_one_row(void **state)
{
    (void)state;
    hy_err err = {{0}};
    static const char yaml[] = "messages:\n  R:\n    tlv_type: 9\n    domain: X\n    fields:\n"
                               "      one: {type: \"[[u8; 4]; 1]\"}\n"
                               "      flat: {type: \"[u8; 4]\"}\n";
    hy_schema *s = hy_schema_load_buffer("r.yaml", (const uint8_t *)yaml, strlen(yaml), &err);
    if (!s)
        fail_msg("%s", err.msg);
    const hy_message *m = &s->msgs[0];
    assert_int_equal(m->size, 8);
    const uint8_t p[8] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04};
    json_t *o = hy_decode_json(m, p, sizeof p);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "flat")), "01020304");
    json_t *ol = json_object_get(o, "one");
    if (!json_is_array(ol)) {
        char *t = json_dumps(ol, JSON_ENCODE_ANY);
        json_decref(o);
        hy_schema_free(s);
        fail_msg("[[u8; 4]; 1] decoded as %s, not a list of one hex row", t);
    }
    assert_int_equal(json_array_size(ol), 1);
    assert_string_equal(json_string_value(json_array_get(ol, 0)), "deadbeef");
    json_decref(o);
    hy_schema_free(s);
}

/* Natural size of a field's meaningful bytes at offset 0 of its slot,
 * given the payload (for String/Vec: the u16 length and the used part). */
static void mark_meaningful(const hy_field *f, const uint8_t *p, uint8_t *mask)
{
    uint32_t o = f->offset;
    switch (f->kind) {
    case HY_FIELD_U8: mask[o] = 1; return;
    case HY_FIELD_U16: memset(mask + o, 1, 2); return;
    case HY_FIELD_U32:
    case HY_FIELD_I32: memset(mask + o, 1, 4); return;
    case HY_FIELD_U64:
    case HY_FIELD_F64: memset(mask + o, 1, 8); return;
    case HY_FIELD_BYTES: memset(mask + o, 1, (size_t)f->elem_size * (f->count ? f->count : 1)); return;
    case HY_FIELD_STRING:
    case HY_FIELD_VEC: {
        size_t n = (size_t)p[o] | (size_t)p[o + 1] << 8;
        if (n > f->count)
            n = f->count;
        memset(mask + o, 1, 2);
        memset(mask + o + HY_VAR_HEADER, 1, n * f->elem_size);
        return;
    }
    }
}

/* Garbage in every byte that carries no value (alignment padding, the six
 * header bytes of String/Vec, their unused capacity) changes nothing. */
static void test_padding_ignored(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    size_t ci, padding_bytes = 0;
    json_t *c;
    json_array_foreach(root, ci, c) {
        hy_schema *s = load_contracts(json_string_value(json_object_get(c, "contracts")));
        size_t mi;
        json_t *mv;
        json_array_foreach(json_object_get(c, "messages"), mi, mv) {
            const char *name = json_string_value(json_object_get(mv, "name"));
            const hy_message *m = hy_schema_find_name(s, name);
            size_t len;
            uint8_t *p = unhex(json_string_value(json_object_get(mv, "payload_hex")), &len);
            uint8_t *mask = calloc(1, len);
            assert_non_null(mask);
            for (size_t k = 0; k < m->nfields; k++)
                mark_meaningful(&m->fields[k], p, mask);
            json_t *clean = hy_decode_json(m, p, (uint32_t)len);
            assert_non_null(clean);
            for (int pattern = 0; pattern < 3; pattern++) {
                for (size_t i = 0; i < len; i++)
                    if (!mask[i])
                        p[i] = pattern == 0 ? 0xff : pattern == 1 ? (uint8_t)(0x80 + i) : 0xc3;
                json_t *dirty = hy_decode_json(m, p, (uint32_t)len);
                assert_non_null(dirty);
                if (!json_equal(clean, dirty)) {
                    char *a = json_dumps(clean, JSON_COMPACT), *b = json_dumps(dirty, JSON_COMPACT);
                    fail_msg("%s: garbage padding (pattern %d) changed\n  %s\nto\n  %s", name, pattern, a, b);
                }
                /* and it is still the vectors' values */
                assert_true(same_object(name, json_object_get(mv, "values"), dirty));
                json_decref(dirty);
            }
            /* count the alignment padding proper: bytes outside every
             * field's slot (String/Vec slots: header + capacity) */
            uint8_t *slot = calloc(1, len);
            assert_non_null(slot);
            for (size_t k = 0; k < m->nfields; k++) {
                const hy_field *f = &m->fields[k];
                size_t natural = f->kind == HY_FIELD_STRING || f->kind == HY_FIELD_VEC
                                     ? HY_VAR_HEADER + (size_t)f->count * f->elem_size
                                 : f->kind == HY_FIELD_BYTES ? (size_t)f->elem_size * (f->count ? f->count : 1)
                                 : f->kind == HY_FIELD_U8    ? 1
                                 : f->kind == HY_FIELD_U16   ? 2
                                 : f->kind == HY_FIELD_U32 || f->kind == HY_FIELD_I32 ? 4
                                                                                      : 8;
                memset(slot + f->offset, 1, natural);
            }
            for (size_t i = 0; i < len; i++)
                padding_bytes += !slot[i];
            free(slot);
            json_decref(clean);
            free(mask);
            free(p);
        }
        hy_schema_free(s);
    }
    json_decref(root);
    assert_true(padding_bytes > 0); /* PoolStateUpdate, InstrumentMeta... have some */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_wrong_len),
        cmocka_unit_test(test_length_over_capacity),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_nul_in_string),
        cmocka_unit_test(test_scalar_ranges),
        cmocka_unit_test(test_bytes_shapes),
        cmocka_unit_test(test_bytes_one_row),
        cmocka_unit_test(test_padding_ignored),
    };
    return cmocka_run_group_tests_name("decode", tests, NULL, NULL);
}
