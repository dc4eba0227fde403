/* test_schema.c - the contracts loader against Mycelium's wire vectors, and
 * its errors for contracts it must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "hypha/schema.h"
#include "hypha/tlv.h"

static char vec_path[4096];

static const char *vectors_dir(void)
{
    const char *d = getenv("HYPHA_VECTORS");
    return d ? d : "tests/vectors";
}

/* Every message in wire-vectors.json: size, alignment, offsets, topic, type
 * id and the digest, as the loader computes them. */
static void test_vectors(void **state)
{
    (void)state;
    snprintf(vec_path, sizeof vec_path, "%s/wire-vectors.json", vectors_dir());
    json_error_t jerr;
    json_t *root = json_load_file(vec_path, 0, &jerr);
    if (!root)
        fail_msg("%s: %s", vec_path, jerr.text);
    size_t ci, checked = 0;
    json_t *c;
    json_array_foreach(root, ci, c) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", vectors_dir(),
                 json_string_value(json_object_get(c, "contracts")));
        hy_err err = {{0}};
        hy_schema *s = hy_schema_load(path, &err);
        if (!s)
            fail_msg("%s", err.msg);
        assert_string_equal(s->digest_hex, json_string_value(json_object_get(c, "schema_digest")));
        json_t *msgs = json_object_get(c, "messages");
        assert_int_equal(s->nmsgs, json_array_size(msgs));
        size_t mi;
        json_t *mv;
        json_array_foreach(msgs, mi, mv) {
            const char *name = json_string_value(json_object_get(mv, "name"));
            const hy_message *m = hy_schema_find_name(s, name);
            assert_non_null(m);
            assert_ptr_equal(hy_schema_find(s, m->type_id), m);
            assert_int_equal(m->type_id, json_integer_value(json_object_get(mv, "type_id")));
            assert_string_equal(m->topic, json_string_value(json_object_get(mv, "topic")));
            assert_int_equal(m->size, json_integer_value(json_object_get(mv, "size")));
            assert_int_equal(m->align, json_integer_value(json_object_get(mv, "align")));
            json_t *offs = json_object_get(mv, "field_offsets");
            assert_int_equal(m->nfields, json_object_size(offs));
            for (size_t k = 0; k < m->nfields; k++) {
                json_t *o = json_object_get(offs, m->fields[k].name);
                if (!o)
                    fail_msg("%s.%s not in vectors", name, m->fields[k].name);
                assert_int_equal(m->fields[k].offset, json_integer_value(o));
            }
            /* the payload in the vectors is exactly `size` bytes */
            assert_int_equal(strlen(json_string_value(json_object_get(mv, "payload_hex"))),
                             2 * m->size);
            checked++;
        }
        hy_schema_free(s);
    }
    assert_int_equal(checked, 11);
    json_decref(root);
}

static void test_layout_details(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/mycelium-examples.contracts.yaml", vectors_dir());
    hy_err err = {{0}};
    hy_schema *s = hy_schema_load(path, &err);
    assert_non_null(s);
    /* sorted by type id */
    assert_int_equal(s->msgs[0].type_id, 1001);
    assert_int_equal(s->msgs[2].type_id, 1003);
    const hy_message *b = hy_schema_find(s, 1003);
    assert_string_equal(b->name, "BatchOperation");
    const hy_field *items = &b->fields[1];
    assert_string_equal(items->name, "items");
    assert_int_equal(items->kind, HY_FIELD_VEC);
    assert_int_equal(items->elem_size, 20);
    assert_int_equal(items->count, 10); /* validation max_length */
    assert_int_equal(items->size, 8 + 200);
    const hy_message *t = hy_schema_find(s, 1001);
    assert_int_equal(t->fields[0].kind, HY_FIELD_STRING);
    assert_int_equal(t->fields[0].count, 32);
    assert_int_equal(t->fields[1].count, 256);
    assert_int_equal(t->fields[0].line, 32);
    assert_null(hy_schema_find(s, 999));
    assert_null(hy_schema_find(s, 0));
    assert_null(hy_schema_find_name(s, "Nope"));
    hy_schema_free(s);
}

static hy_schema *load_str(const char *yaml, hy_err *err)
{
    return hy_schema_load_buffer("c.yaml", (const uint8_t *)yaml, strlen(yaml), err);
}

/* Types not in the vectors: defaults and rounding of odd capacities. */
static void test_all_types(void **state)
{
    (void)state;
    hy_err err = {{0}};
    hy_schema *s = load_str("messages:\n"
                            "  All:\n"
                            "    tlv_type: 0x1234\n"
                            "    domain: MarketData\n"
                            "    fields:\n"
                            "      a: u8\n"
                            "      s: {type: String, validation: [{max_length: 5}]}\n"
                            "      grid: {type: \"[[u8; 3]; 2]\"}\n"
                            "      v: {type: Vec<u8>}\n"
                            "      w: {type: \"Vec<[u8; 32]>\"}\n"
                            "      b: {type: \"[u8;7]\"}\n"
                            "      x: {type: f64}\n",
                            &err);
    if (!s)
        fail_msg("%s", err.msg);
    const hy_message *m = &s->msgs[0];
    assert_int_equal(m->type_id, 0x1234);
    assert_string_equal(m->topic, "market-data");
    /* a@0(1) s@2(8+5 -> 14) grid@16(6) v@22(8+16=24) w@46(8+128=136) b@182(7) x@192(8) */
    uint32_t offs[] = {0, 2, 16, 22, 46, 182, 192};
    uint32_t sizes[] = {1, 14, 6, 24, 136, 7, 8};
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(m->fields[i].offset, offs[i]);
        assert_int_equal(m->fields[i].size, sizes[i]);
    }
    assert_int_equal(m->fields[2].count, 2);
    assert_int_equal(m->fields[2].elem_size, 3);
    assert_int_equal(m->fields[3].count, 16); /* Vec<u8> default capacity */
    assert_int_equal(m->fields[4].count, 4);  /* Vec<[u8; N]> default capacity */
    assert_int_equal(m->size, 200);
    assert_int_equal(m->align, 8);
    hy_schema_free(s);
}

typedef struct bad_case {
    const char *yaml;
    const char *expect; /* full "c.yaml:L:C: ..." prefix or substring */
} bad_case;

static void test_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: {type: i64}\n",
         "c.yaml:6:17: field A.f: unsupported type 'i64'"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: u8\n"
         "  B:\n    tlv_type: 5\n    domain: X\n    fields:\n      g: u8\n",
         "c.yaml:8:15: message B: tlv_type 5 is already used by A (line 2)"},
        {"messages:\n  A:\n    domain: X\n    fields:\n      f: u8\n",
         "c.yaml:2:3: message A: missing 'tlv_type'"},
        {"messages:\n  A:\n    tlv_type: 5\n    fields:\n      f: u8\n",
         "c.yaml:2:3: message A: missing 'domain'"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n",
         "c.yaml:2:3: message A: missing 'fields'"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields: {}\n",
         "c.yaml:5:13: message A has no fields"},
        {"messages:\n  A:\n    tlv_type: 0\n    domain: X\n    fields:\n      f: u8\n",
         "c.yaml:3:15: message A: tlv_type 0 is reserved"},
        {"messages:\n  A:\n    tlv_type: 70000\n    domain: X\n    fields:\n      f: u8\n",
         "c.yaml:3:15: message A tlv_type must be from 0 to 65535"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: {description: x}\n",
         "c.yaml:6:7: field A.f: missing 'type'"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: u8\n      f: u16\n",
         "c.yaml:7:7: duplicate key 'f' in message A fields (first at line 6)"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n"
         "      s: {type: String, validation: [{max_length: 0}]}\n",
         "c.yaml:6:51: field A.s max_length must be from 1 to 65535"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n"
         "      v: {type: \"Vec<[u8; 21]>\"}\n",
         "unsupported type 'Vec<[u8; 21]>'"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n"
         "      v: {type: \"[u8; 16777217]\"}\n",
         "c.yaml:6:17: field A.v: type '[u8; 16777217]' is larger than a frame can carry (16777216 bytes)"},
        {"messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n"
         "      v: {type: \"[u8; 16777216]\"}\n      w: u8\n",
         "c.yaml:2:3: message A is larger than a frame can carry (16777216 bytes)"},
        {"messages:\n  A:\n    tlv_typo: 5\n    domain: X\n    fields:\n      f: u8\n",
         "c.yaml:2:3: message A: missing 'tlv_type'"},
        {"messages:\n  A:\n    tlv_type: 5\n    tlv_type: 6\n    domain: X\n    fields:\n      f: u8\n",
         "c.yaml:4:5: duplicate key 'tlv_type' in message A (first at line 3)"},
        {"messages:\n  1bad:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: u8\n",
         "c.yaml:2:3: message 1bad: message names must be identifiers"},
        {"schema: {id: 1}\n", "c.yaml:1:1: missing 'messages'"},
        {"messages: [a, b]\n", "c.yaml:1:11: messages must be a mapping, not a list"},
        {"messages:\n  A: [\n", "c.yaml:3:1: YAML syntax error"},
        {"", "c.yaml:1:1: file is empty"},
        {"- 1\n", "c.yaml:1:1: a contracts file must be a mapping, not a list"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hy_err err = {{0}};
        hy_schema *s = load_str(cases[i].yaml, &err);
        if (s)
            fail_msg("case %zu loaded but should fail with %s", i, cases[i].expect);
        if (strncmp(cases[i].expect, "c.yaml:", 7) == 0
                ? strncmp(err.msg, cases[i].expect, strlen(cases[i].expect)) != 0
                : strstr(err.msg, cases[i].expect) == NULL)
            { print_error("case %zu: got '%s', expected '%s'\n", i, err.msg, cases[i].expect); bad++; }
    }
    assert_int_equal(bad, 0);
}

/* A message of exactly the frame limit (Mycelium's 16 MiB) is accepted;
 * one of the old 4 MiB limit and more, too. */
static void test_largest_message(void **state)
{
    (void)state;
    hy_err err = {{0}};
    hy_schema *s = load_str("messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n"
                            "      v: {type: \"[u8; 16777216]\"}\n"
                            "  B:\n    tlv_type: 6\n    domain: X\n    fields:\n"
                            "      v: {type: \"[u8; 4194305]\"}\n",
                            &err);
    if (!s)
        fail_msg("%s", err.msg);
    assert_int_equal(s->msgs[0].size, HY_TLV_MAX_PAYLOAD);
    assert_int_equal(s->msgs[1].size, 4194305);
    hy_schema_free(s);
}

/* Keys Mycelium may add that do not change the wire are accepted. */
static void test_unknown_keys_ignored(void **state)
{
    (void)state;
    hy_err err = {{0}};
    hy_schema *s = load_str("version_note: x\nmessages:\n  A:\n    tlv_type: 5\n    domain: X\n"
                            "    priority: high\n    fields:\n      f: {type: u8, units: none}\n",
                            &err);
    if (!s)
        fail_msg("%s", err.msg);
    assert_int_equal(s->msgs[0].size, 1);
    hy_schema_free(s);
}

static void test_missing_file(void **state)
{
    (void)state;
    hy_err err = {{0}};
    assert_null(hy_schema_load("/nonexistent/contracts.yaml", &err));
    assert_string_equal(err.msg, "/nonexistent/contracts.yaml: cannot open: No such file or directory");
}

static void test_digest_is_of_bytes(void **state)
{
    (void)state;
    /* Same messages, one extra comment: the digest must change (it is of
     * the file's bytes, not its meaning). */
    const char *a = "messages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: u8\n";
    const char *b = "# c\nmessages:\n  A:\n    tlv_type: 5\n    domain: X\n    fields:\n      f: u8\n";
    hy_err err = {{0}};
    hy_schema *sa = load_str(a, &err), *sb = load_str(b, &err);
    assert_non_null(sa);
    assert_non_null(sb);
    assert_string_not_equal(sa->digest_hex, sb->digest_hex);
    /* sha256("") is well known */
    uint8_t d[32];
    char hex[65];
    assert_int_equal(hy_sha256((const uint8_t *)"", 0, d, hex, &err), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hy_schema_free(sa);
    hy_schema_free(sb);
}

static void test_topic(void **state)
{
    (void)state;
    char t[64];
    hy_topic_for_domain("MarketData", t, sizeof t);
    assert_string_equal(t, "market-data");
    hy_topic_for_domain("Signal", t, sizeof t);
    assert_string_equal(t, "signal");
    hy_topic_for_domain("GAME", t, sizeof t);
    assert_string_equal(t, "game");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),      cmocka_unit_test(test_layout_details),
        cmocka_unit_test(test_all_types),    cmocka_unit_test(test_errors),
        cmocka_unit_test(test_missing_file), cmocka_unit_test(test_digest_is_of_bytes),
        cmocka_unit_test(test_largest_message),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_topic),
    };
    return cmocka_run_group_tests_name("schema", tests, NULL, NULL);
}
