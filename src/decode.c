/* decode.c - a message payload as JSON (see hypha/decode.h). Pure. */
#include "hypha/decode.h"
#include "hypha/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static json_t *hex(const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char stack[129];
    char *s = n * 2 < sizeof stack ? stack : malloc(n * 2 + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    s[2 * n] = '\0';
    json_t *j = json_string(s);
    if (s != stack)
        free(s);
    return j;
}

static json_t *text(const uint8_t *p, size_t n)
{
    char *s = malloc(n * 3 + 1); /* each bad byte becomes 3 bytes of U+FFFD */
    if (!s)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = hy_utf8_seq(p + i, n - i);
        if (l) {
            memcpy(s + k, p + i, l);
            k += l;
            i += l;
        } else {
            memcpy(s + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    json_t *j = json_stringn(s, k);
    free(s);
    return j;
}

static json_t *field_json(const hy_field *f, const uint8_t *p)
{
    switch (f->kind) {
    case HY_FIELD_U8:
    case HY_FIELD_U16:
    case HY_FIELD_U32:
        return json_integer((json_int_t)le(p, f->size));
    case HY_FIELD_U64: {
        uint64_t v = le(p, 8);
        if (v <= (uint64_t)INT64_MAX)
            return json_integer((json_int_t)v);
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
        return json_string(buf);
    }
    case HY_FIELD_I32:
        return json_integer((json_int_t)(int32_t)(uint32_t)le(p, 4));
    case HY_FIELD_F64: {
        uint64_t bits = le(p, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        return json_real(d); /* NaN and infinities: jansson refuses them, so null */
    }
    case HY_FIELD_BYTES: {
        /* [[u8; N]; 1] is a list of one row, as its type says */
        if (f->count <= 1 && strncmp(f->type_text, "[[", 2) != 0)
            return hex(p, f->elem_size);
        json_t *rows = json_array();
        for (uint32_t i = 0; rows && i < f->count; i++)
            json_array_append_new(rows, hex(p + (size_t)i * f->elem_size, f->elem_size));
        return rows;
    }
    case HY_FIELD_STRING: {
        size_t n = (size_t)le(p, 2);
        if (n > f->count)
            n = f->count;
        return text(p + HY_VAR_HEADER, n);
    }
    case HY_FIELD_VEC: {
        size_t n = (size_t)le(p, 2);
        if (n > f->count)
            n = f->count;
        if (f->elem_size == 1)
            return hex(p + HY_VAR_HEADER, n);
        json_t *items = json_array();
        for (size_t i = 0; items && i < n; i++)
            json_array_append_new(items, hex(p + HY_VAR_HEADER + i * f->elem_size, f->elem_size));
        return items;
    }
    }
    return json_null();
}

json_t *hy_decode_json(const hy_message *m, const uint8_t *payload, uint32_t len)
{
    if (!m || len != m->size)
        return NULL;
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < m->nfields; i++) {
        const hy_field *f = &m->fields[i];
        json_t *v = field_json(f, payload + f->offset);
        if (json_object_set_new(o, f->name, v ? v : json_null()) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

const hy_message *hy_decode_type(const hy_schema *schema, const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) > 0 && json_integer_value(v) <= 65535
                   ? hy_schema_find(schema, (uint16_t)json_integer_value(v))
                   : NULL;
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    const hy_message *m = hy_schema_find_name(schema, s);
    if (m || !*s)
        return m;
    char *end;
    long id = strtol(s, &end, 10);
    return !*end && id > 0 && id <= 65535 ? hy_schema_find(schema, (uint16_t)id) : NULL;
}
