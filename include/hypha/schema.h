/* schema.h - a Mycelium contracts.yaml, loaded.
 *
 * The contracts file defines TLV messages; each message's payload is the
 * #[repr(C)] layout of its struct (fields in file order, natural alignment,
 * zero padding). This module reads the file with libyaml, maps every field
 * type Mycelium supports to its size/alignment/offset, and computes the schema
 * digest (SHA-256 of the file's exact bytes) that the upstream handshake and
 * the worker hello carry. hyphad, hypha-codegen and the tests share it.
 */
#ifndef HYPHA_SCHEMA_H
#define HYPHA_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"

#define HY_DIGEST_LEN 32
/* The largest contracts file the loader reads. */
#define HY_SCHEMA_MAX_FILE (64u << 20)

typedef enum hy_field_kind {
    HY_FIELD_U8,
    HY_FIELD_U16,
    HY_FIELD_U32,
    HY_FIELD_U64,
    HY_FIELD_I32,
    HY_FIELD_F64,
    HY_FIELD_BYTES,  /* [u8; N], U256, [[u8; N]; M]: raw bytes, align 1 */
    HY_FIELD_STRING, /* u16 len, 6 zero bytes, capacity bytes; align 2 */
    HY_FIELD_VEC,    /* u16 count, 6 zero bytes, capacity elements; align 2 */
} hy_field_kind;

/* Bytes before the data of a String or Vec: u16 length/count + 6 zero bytes. */
#define HY_VAR_HEADER 8u

typedef struct hy_field {
    char *name;          /* field name (owned) */
    char *type_text;     /* the type as written, e.g. "Vec<[u8; 20]>" (owned) */
    hy_field_kind kind;
    uint32_t offset;     /* within the payload */
    uint32_t size;       /* bytes, including any trailing padding of its own */
    uint32_t align;
    uint32_t elem_size;  /* BYTES: row length N; VEC: element size; else size */
    uint32_t count;      /* BYTES: rows M (1 unless [[u8; N]; M]);
                            STRING: capacity in bytes; VEC: capacity */
    size_t line, col;    /* where it is defined, 1-based */
} hy_field;

typedef struct hy_message {
    char *name;          /* e.g. "PoolStateUpdate" (owned) */
    uint16_t type_id;    /* tlv_type */
    char *domain;        /* as written, e.g. "MarketData" (owned) */
    char *topic;         /* derived: "market-data" (owned) */
    uint32_t size;       /* payload size, a multiple of align */
    uint32_t align;
    hy_field *fields;    /* in file order (owned) */
    size_t nfields;
    size_t line, col;
} hy_message;

typedef struct hy_schema {
    char *path;                      /* as given to the loader (owned) */
    uint8_t digest[HY_DIGEST_LEN];   /* SHA-256 of the file's bytes */
    char digest_hex[2 * HY_DIGEST_LEN + 1];
    hy_message *msgs;                /* sorted by type_id (owned) */
    size_t nmsgs;
} hy_schema;

/* Load from a file. Returns NULL and sets err on any problem. */
hy_schema *hy_schema_load(const char *path, hy_err *err);
/* Load from memory; `name` is used in messages and as the path. */
hy_schema *hy_schema_load_buffer(const char *name, const uint8_t *data,
                                 size_t len, hy_err *err);
void hy_schema_free(hy_schema *s);

const hy_message *hy_schema_find(const hy_schema *s, uint16_t type_id);
const hy_message *hy_schema_find_name(const hy_schema *s, const char *name);

/* "u8", "String", ... for a kind. */
const char *hy_field_kind_str(hy_field_kind k);

/* Topic for a domain: lowercased, "marketdata" spelled "market-data".
 * Writes into out (NUL-terminated, truncated to outlen). */
void hy_topic_for_domain(const char *domain, char *out, size_t outlen);

/* SHA-256 of data into out; hex form into hex (65 bytes). 0 or -1. */
int hy_sha256(const uint8_t *data, size_t len, uint8_t out[HY_DIGEST_LEN],
              char hex[2 * HY_DIGEST_LEN + 1], hy_err *err);

#endif
