/* schema.c - Mycelium contracts.yaml loader (see hypha/schema.h).
 *
 * The layout rules are Mycelium's #[repr(C)] rules: fields in file order, each
 * at the next multiple of its alignment, the struct padded to a multiple of
 * its largest alignment. String and Vec fields are fixed-capacity structs of
 * their own (u16 length, 6 zero bytes, the data), so their size is rounded up
 * to their alignment of 2 like any C struct. The file format is Mycelium's, so
 * keys that do not affect the wire (description, rkyv, invariants, and any
 * Mycelium adds later) are accepted and ignored; duplicates are still errors.
 */
#include "hypha/schema.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "hypha/tlv.h"
#include "yamlx.h"

#define DEFAULT_STRING_CAP 32u
#define DEFAULT_VEC_CAP 4u
#define DEFAULT_BYTEVEC_CAP 16u

int hy_sha256(const uint8_t *data, size_t len, uint8_t out[HY_DIGEST_LEN],
              char hex[2 * HY_DIGEST_LEN + 1], hy_err *err)
{
    unsigned int outlen = 0;
    /* Skip reading openssl.cnf: hyphad only hashes, and the config machinery
     * would cost megabytes of resident memory in a long-lived daemon. */
    static int inited;
    if (!inited && OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL))
        inited = 1;
    if (!EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) || outlen != HY_DIGEST_LEN)
        return hy_err_set(err, "SHA-256 failed (OpenSSL EVP_Digest)");
    if (hex) {
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < HY_DIGEST_LEN; i++) {
            hex[2 * i] = digits[out[i] >> 4];
            hex[2 * i + 1] = digits[out[i] & 15];
        }
        hex[2 * HY_DIGEST_LEN] = '\0';
    }
    return 0;
}

const char *hy_field_kind_str(hy_field_kind k)
{
    switch (k) {
    case HY_FIELD_U8: return "u8";
    case HY_FIELD_U16: return "u16";
    case HY_FIELD_U32: return "u32";
    case HY_FIELD_U64: return "u64";
    case HY_FIELD_I32: return "i32";
    case HY_FIELD_F64: return "f64";
    case HY_FIELD_BYTES: return "bytes";
    case HY_FIELD_STRING: return "String";
    case HY_FIELD_VEC: return "Vec";
    }
    return "?";
}

void hy_topic_for_domain(const char *domain, char *out, size_t outlen)
{
    if (!outlen)
        return;
    char low[128];
    size_t i = 0;
    for (; domain[i] && i < sizeof low - 1; i++)
        low[i] = (char)tolower((unsigned char)domain[i]);
    low[i] = '\0';
    snprintf(out, outlen, "%s", strcmp(low, "marketdata") == 0 ? "market-data" : low);
}

/* Parse "N" (a positive decimal) at *p, skipping spaces around it. */
static int parse_dim(const char **p, uint32_t *out)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > 0x7fffffffUL) /* far past any frame; layout_field says so */
            return -1;
        s++;
    }
    while (*s == ' ')
        s++;
    if (v == 0)
        return -1;
    *out = (uint32_t)v;
    *p = s;
    return 0;
}

/* Match a literal after optional spaces. */
static int lit(const char **p, const char *l)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    size_t n = strlen(l);
    if (strncmp(s, l, n) != 0)
        return -1;
    s += n;
    while (*s == ' ')
        s++;
    *p = s;
    return 0;
}

/* "[u8; N]" at *p. */
static int parse_byte_array(const char **p, uint32_t *n)
{
    const char *s = *p;
    if (lit(&s, "[") < 0 || lit(&s, "u8") < 0 || lit(&s, ";") < 0 || parse_dim(&s, n) < 0 ||
        lit(&s, "]") < 0)
        return -1;
    *p = s;
    return 0;
}

/* Classify a field type. Sets kind, elem_size and count (capacity is applied
 * later from validation). Returns 0, or -1 if the type is not one Mycelium
 * supports. */
static int parse_type(const char *t, hy_field *f, bool *has_cap)
{
    static const struct { const char *name; hy_field_kind kind; uint32_t size; } scalars[] = {
        {"u8", HY_FIELD_U8, 1}, {"u16", HY_FIELD_U16, 2}, {"u32", HY_FIELD_U32, 4},
        {"u64", HY_FIELD_U64, 8}, {"i32", HY_FIELD_I32, 4}, {"f64", HY_FIELD_F64, 8},
    };
    *has_cap = false;
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        if (strcmp(t, scalars[i].name) == 0) {
            f->kind = scalars[i].kind;
            f->elem_size = f->size = f->align = scalars[i].size;
            f->count = 1;
            return 0;
        }
    }
    if (strcmp(t, "U256") == 0) {
        f->kind = HY_FIELD_BYTES;
        f->elem_size = 32;
        f->count = 1;
        return 0;
    }
    if (strcmp(t, "String") == 0) {
        f->kind = HY_FIELD_STRING;
        f->elem_size = 1;
        f->count = DEFAULT_STRING_CAP;
        *has_cap = true;
        return 0;
    }
    if (strcmp(t, "Vec<u8>") == 0 || strcmp(t, "Vec< u8 >") == 0) {
        f->kind = HY_FIELD_VEC;
        f->elem_size = 1;
        f->count = DEFAULT_BYTEVEC_CAP;
        *has_cap = true;
        return 0;
    }
    const char *s = t;
    uint32_t n, m;
    if (strncmp(s, "Vec<", 4) == 0) {
        s += 4;
        if (parse_byte_array(&s, &n) < 0 || lit(&s, ">") < 0 || *s)
            return -1;
        if (n != 20 && n != 32)
            return -1;
        f->kind = HY_FIELD_VEC;
        f->elem_size = n;
        f->count = DEFAULT_VEC_CAP;
        *has_cap = true;
        return 0;
    }
    if (parse_byte_array(&s, &n) == 0 && !*s) {
        f->kind = HY_FIELD_BYTES;
        f->elem_size = n;
        f->count = 1;
        return 0;
    }
    s = t;
    if (lit(&s, "[") == 0 && parse_byte_array(&s, &n) == 0 && lit(&s, ";") == 0 &&
        parse_dim(&s, &m) == 0 && lit(&s, "]") == 0 && !*s) {
        f->kind = HY_FIELD_BYTES;
        f->elem_size = n;
        f->count = m;
        return 0;
    }
    return -1;
}

/* Apply `validation: [ {max_length: N}, ... ]` (or a mapping) to capacity. */
static int apply_validation(hy_ydoc *y, const yaml_node_t *v, hy_field *f, bool has_cap,
                            const char *what)
{
    const yaml_node_t *maxlen = NULL;
    if (hy_yis_seq(v)) {
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            yaml_node_t *e = hy_ynode(y, *it);
            if (hy_yis_map(e)) {
                yaml_node_t *ml = hy_ymap_get(y, e, "max_length");
                if (ml)
                    maxlen = ml;
            }
        }
    } else if (hy_yis_map(v)) {
        maxlen = hy_ymap_get(y, v, "max_length");
    } else if (!hy_yis_null(v)) {
        return hy_yerr(y, v, "%s.validation must be a list, not %s", what, hy_ykind(v));
    }
    if (!maxlen || !has_cap)
        return 0;
    uint64_t cap;
    char w[256];
    snprintf(w, sizeof w, "%s max_length", what);
    if (hy_yget_uint(y, maxlen, w, 1, 65535, &cap) < 0)
        return -1;
    f->count = (uint32_t)cap;
    return 0;
}

static uint32_t align_up(uint64_t v, uint32_t a) { return (uint32_t)((v + a - 1) / a * a); }

/* Size and alignment from kind, elem_size and count. 0, or -1 if too big. */
static int layout_field(hy_field *f)
{
    uint64_t sz;
    switch (f->kind) {
    case HY_FIELD_BYTES:
        f->align = 1;
        sz = (uint64_t)f->elem_size * f->count;
        break;
    case HY_FIELD_STRING:
    case HY_FIELD_VEC:
        f->align = 2;
        sz = HY_VAR_HEADER + (uint64_t)f->elem_size * f->count;
        sz = (sz + 1) & ~(uint64_t)1;
        break;
    default:
        return 0; /* scalars were sized by parse_type */
    }
    if (sz > HY_TLV_MAX_PAYLOAD)
        return -1;
    f->size = (uint32_t)sz;
    return 0;
}

static void free_message(hy_message *m)
{
    for (size_t i = 0; i < m->nfields; i++) {
        free(m->fields[i].name);
        free(m->fields[i].type_text);
    }
    free(m->fields);
    free(m->name);
    free(m->domain);
    free(m->topic);
}

void hy_schema_free(hy_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nmsgs; i++)
        free_message(&s->msgs[i]);
    free(s->msgs);
    free(s->path);
    free(s);
}

static int load_field(hy_ydoc *y, hy_message *m, yaml_node_t *key, yaml_node_t *val,
                      hy_field *f)
{
    char what[256];
    const char *fname = hy_ystr(key);
    snprintf(what, sizeof what, "field %s.%s", m->name, fname);
    if (!hy_is_ident(fname))
        return hy_yerr(y, key, "%s: field names must be identifiers", what);
    f->line = hy_yline(key);
    f->col = hy_ycol(key);
    if (!(f->name = strdup(fname)))
        return hy_yerr(y, key, "out of memory");
    yaml_node_t *tn;
    if (hy_yis_scalar(val) && !hy_yis_null(val)) {
        tn = val; /* shorthand: `name: u64` */
    } else {
        if (hy_yexpect_map(y, val, what) < 0 || hy_ymap_check(y, val, what, NULL) < 0)
            return -1;
        tn = hy_ymap_get(y, val, "type");
        if (!tn)
            return hy_yerr(y, key, "%s: missing 'type'", what);
    }
    const char *tt;
    if (hy_yget_str(y, tn, what, &tt) < 0)
        return -1;
    if (!(f->type_text = strdup(tt)))
        return hy_yerr(y, tn, "out of memory");
    bool has_cap;
    if (parse_type(tt, f, &has_cap) < 0)
        return hy_yerr(y, tn,
                       "%s: unsupported type '%s' (supported: u8 u16 u32 u64 i32 f64, [u8; N], "
                       "U256, [[u8; N]; M], String, Vec<[u8; 20]>, Vec<[u8; 32]>, Vec<u8>)",
                       what, tt);
    if (hy_yis_map(val)) {
        yaml_node_t *v = hy_ymap_get(y, val, "validation");
        if (v && apply_validation(y, v, f, has_cap, what) < 0)
            return -1;
    }
    if (layout_field(f) < 0)
        return hy_yerr(y, tn, "%s: type '%s' is larger than a frame can carry (%u bytes)", what,
                       tt, HY_TLV_MAX_PAYLOAD);
    return 0;
}

static int load_message(hy_ydoc *y, yaml_node_t *key, yaml_node_t *val, hy_message *m)
{
    const char *name = hy_ystr(key);
    char what[200];
    snprintf(what, sizeof what, "message %s", name);
    m->line = hy_yline(key);
    m->col = hy_ycol(key);
    if (!hy_is_ident(name))
        return hy_yerr(y, key, "%s: message names must be identifiers", what);
    if (!(m->name = strdup(name)))
        return hy_yerr(y, key, "out of memory");
    if (hy_yexpect_map(y, val, what) < 0 || hy_ymap_check(y, val, what, NULL) < 0)
        return -1;

    yaml_node_t *tid = hy_ymap_get(y, val, "tlv_type");
    if (!tid)
        return hy_yerr(y, key, "%s: missing 'tlv_type'", what);
    uint64_t id;
    char w[256];
    snprintf(w, sizeof w, "%s tlv_type", what);
    if (hy_yget_uint(y, tid, w, 0, 65535, &id) < 0)
        return -1;
    if (id == 0)
        return hy_yerr(y, tid, "%s: tlv_type 0 is reserved for hypha control frames", what);
    m->type_id = (uint16_t)id;

    yaml_node_t *dom = hy_ymap_get(y, val, "domain");
    if (!dom)
        return hy_yerr(y, key, "%s: missing 'domain' (it names the topic)", what);
    const char *ds;
    snprintf(w, sizeof w, "%s domain", what);
    if (hy_yget_str(y, dom, w, &ds) < 0)
        return -1;
    char topic[128];
    hy_topic_for_domain(ds, topic, sizeof topic);
    if (!(m->domain = strdup(ds)) || !(m->topic = strdup(topic)))
        return hy_yerr(y, dom, "out of memory");

    yaml_node_t *fields = hy_ymap_get(y, val, "fields");
    if (!fields)
        return hy_yerr(y, key, "%s: missing 'fields'", what);
    snprintf(w, sizeof w, "%s fields", what);
    if (hy_yexpect_map(y, fields, w) < 0 || hy_ymap_check(y, fields, w, NULL) < 0)
        return -1;
    size_t n = (size_t)(fields->data.mapping.pairs.top - fields->data.mapping.pairs.start);
    if (n == 0)
        return hy_yerr(y, fields, "%s has no fields", what);
    if (!(m->fields = calloc(n, sizeof *m->fields)))
        return hy_yerr(y, fields, "out of memory");
    uint64_t off = 0;
    m->align = 1;
    for (yaml_node_pair_t *p = fields->data.mapping.pairs.start; p < fields->data.mapping.pairs.top; p++) {
        hy_field *f = &m->fields[m->nfields++];
        if (load_field(y, m, hy_ynode(y, p->key), hy_ynode(y, p->value), f) < 0)
            return -1;
        off = align_up(off, f->align);
        f->offset = (uint32_t)off;
        off += f->size;
        if (f->align > m->align)
            m->align = f->align;
        if (off > HY_TLV_MAX_PAYLOAD)
            return hy_yerr(y, key, "%s is larger than a frame can carry (%u bytes)", what,
                           HY_TLV_MAX_PAYLOAD);
    }
    off = align_up(off, m->align);
    if (off > HY_TLV_MAX_PAYLOAD)
        return hy_yerr(y, key, "%s is larger than a frame can carry (%u bytes)", what,
                       HY_TLV_MAX_PAYLOAD);
    m->size = (uint32_t)off;
    return 0;
}

static int cmp_msg(const void *a, const void *b)
{
    const hy_message *x = a, *y = b;
    return (int)x->type_id - (int)y->type_id;
}

hy_schema *hy_schema_load_buffer(const char *name, const uint8_t *data, size_t len, hy_err *err)
{
    hy_schema *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(name))) {
        free(s);
        hy_err_set(err, "%s: out of memory", name);
        return NULL;
    }
    hy_ydoc y;
    if (hy_sha256(data, len, s->digest, s->digest_hex, err) < 0 ||
        hy_ydoc_load(&y, s->path, data, len, err) < 0)
        goto fail;

    yaml_node_t *root = hy_ydoc_root(&y);
    if (hy_yexpect_map(&y, root, "a contracts file") < 0 || hy_ymap_check(&y, root, "the contracts file", NULL) < 0)
        goto fail;
    yaml_node_t *msgs = hy_ymap_get(&y, root, "messages");
    if (!msgs) {
        hy_yerr(&y, root, "missing 'messages' (a contracts file defines its messages under 'messages:')");
        goto fail;
    }
    if (hy_yexpect_map(&y, msgs, "messages") < 0 || hy_ymap_check(&y, msgs, "messages", NULL) < 0)
        goto fail;
    size_t n = (size_t)(msgs->data.mapping.pairs.top - msgs->data.mapping.pairs.start);
    if (n == 0) {
        hy_yerr(&y, msgs, "'messages' is empty");
        goto fail;
    }
    if (!(s->msgs = calloc(n, sizeof *s->msgs))) {
        hy_yerr(&y, msgs, "out of memory");
        goto fail;
    }
    for (yaml_node_pair_t *p = msgs->data.mapping.pairs.start; p < msgs->data.mapping.pairs.top; p++) {
        hy_message *m = &s->msgs[s->nmsgs++];
        if (load_message(&y, hy_ynode(&y, p->key), hy_ynode(&y, p->value), m) < 0)
            goto fail;
        for (size_t i = 0; i + 1 < s->nmsgs; i++) {
            if (s->msgs[i].type_id == m->type_id) {
                yaml_node_t *tid = hy_ymap_get(&y, hy_ynode(&y, p->value), "tlv_type");
                hy_yerr(&y, tid, "message %s: tlv_type %u is already used by %s (line %zu)",
                        m->name, m->type_id, s->msgs[i].name, s->msgs[i].line);
                goto fail;
            }
        }
    }
    qsort(s->msgs, s->nmsgs, sizeof *s->msgs, cmp_msg);
    hy_ydoc_free(&y);
    return s;
fail:
    hy_ydoc_free(&y);
    hy_schema_free(s);
    return NULL;
}

hy_schema *hy_schema_load(const char *path, hy_err *err)
{
    size_t len;
    uint8_t *data = hy_read_file(path, &len, HY_SCHEMA_MAX_FILE, err);
    if (!data)
        return NULL;
    hy_schema *s = hy_schema_load_buffer(path, data, len, err);
    free(data);
    return s;
}

const hy_message *hy_schema_find(const hy_schema *s, uint16_t type_id)
{
    size_t lo = 0, hi = s->nmsgs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint16_t id = s->msgs[mid].type_id;
        if (id == type_id)
            return &s->msgs[mid];
        if (id < type_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const hy_message *hy_schema_find_name(const hy_schema *s, const char *name)
{
    for (size_t i = 0; i < s->nmsgs; i++)
        if (strcmp(s->msgs[i].name, name) == 0)
            return &s->msgs[i];
    return NULL;
}
