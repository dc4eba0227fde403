/* hypha_codegen.c - contracts.yaml -> C header + Python module.
 *
 * Both outputs are derived from the layout the shared contracts loader
 * computes (src/schema.c), the same one hyphad checks frames against, so the
 * generated code and the daemon cannot disagree. The C header pins that layout
 * with _Static_assert on every size and offset; the Python module packs with
 * one precompiled struct.Struct per message and explicit zero padding.
 * Output depends only on the contracts file's bytes and base name.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hypha/schema.h"
#include "hypha/version.h"

/* Names that cannot be used as-is in C or Python get a trailing '_'. */
static const char *const reserved[] = {
    /* C */
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "bool",
    /* Python */
    "False", "None", "True", "and", "as", "assert", "async", "await", "class", "def", "del",
    "elif", "except", "finally", "from", "global", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "try", "with", "yield",
    /* members of the generated classes */
    "TYPE_ID", "TOPIC", "SIZE", "NAME", "STRUCT", "CODES", "to_bytes", "from_bytes", "self", "cls", "data",
    NULL};

static const char *ident(const char *name, char *buf, size_t len)
{
    for (const char *const *r = reserved; *r; r++)
        if (strcmp(*r, name) == 0) {
            snprintf(buf, len, "%s_", name);
            return buf;
        }
    return name;
}

/* Message names become C types and Python classes in one module namespace:
 * they may not be keywords, the C types the header uses, or names the module
 * itself relies on at run time. */
static const char *const reserved_types[] = {
    "uint8_t", "uint16_t", "uint32_t", "uint64_t", "int32_t", "size_t", "hy_gen_type",
    "MessageError", "MESSAGES", "BY_NAME", "decode", "SCHEMA_DIGEST", "SCHEMA_FILE",
    "ClassVar", "Dict", "List", "annotations", "len", "isinstance", "bytes", "bytearray",
    "memoryview", "str", "type", "range", "list", "tuple", "int", "float", "getattr",
    "TypeError", "ValueError", "UnicodeDecodeError", NULL};

static bool in_list(const char *const *list, const char *name)
{
    for (const char *const *r = list; *r; r++)
        if (strcmp(*r, name) == 0)
            return true;
    return false;
}

static void upper_snake(const char *s, char *out, size_t len);

/* Refuse names the outputs cannot carry, with the contracts position. */
static int check_names(const hy_schema *s)
{
    for (size_t i = 0; i < s->nmsgs; i++) {
        const hy_message *m = &s->msgs[i];
        if (m->name[0] == '_' || in_list(reserved, m->name) || in_list(reserved_types, m->name)) {
            fprintf(stderr, "%s:%zu:%zu: message %s: the name is reserved in generated C or Python "
                            "(a keyword, a C type, a name the module uses, or a leading '_')\n",
                    s->path, m->line, m->col, m->name);
            return -1;
        }
        char a[256], b[256];
        upper_snake(m->name, a, sizeof a);
        for (size_t j = 0; j < i; j++) {
            upper_snake(s->msgs[j].name, b, sizeof b);
            if (strcmp(a, b) == 0) {
                fprintf(stderr, "%s:%zu:%zu: message %s: its C constant HY_TYPE_%s is also %s's (line %zu)\n",
                        s->path, m->line, m->col, m->name, a, s->msgs[j].name, s->msgs[j].line);
                return -1;
            }
        }
        for (size_t k = 0; k < m->nfields; k++) {
            char nk[128], nl[128];
            const char *fk = ident(m->fields[k].name, nk, sizeof nk);
            for (size_t l = 0; l < k; l++) {
                if (strcmp(fk, ident(m->fields[l].name, nl, sizeof nl)) == 0) {
                    fprintf(stderr, "%s:%zu:%zu: field %s.%s: generated as '%s', which field %s "
                                    "already is (reserved names get a trailing '_')\n",
                            s->path, m->fields[k].line, m->fields[k].col, m->name,
                            m->fields[k].name, fk, m->fields[l].name);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* CamelCase -> CAMEL_CASE */
static void upper_snake(const char *s, char *out, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; s[i] && k + 2 < len; i++) {
        char c = s[i];
        if (i > 0 && c >= 'A' && c <= 'Z' && ((s[i - 1] >= 'a' && s[i - 1] <= 'z') ||
                                            (s[i - 1] >= '0' && s[i - 1] <= '9')))
            out[k++] = '_';
        out[k++] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    out[k] = '\0';
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ---- C header ----------------------------------------------------------- */

static void c_field(FILE *o, const hy_field *f, const char *name)
{
    switch (f->kind) {
    case HY_FIELD_U8: fprintf(o, "    uint8_t %s;\n", name); break;
    case HY_FIELD_U16: fprintf(o, "    uint16_t %s;\n", name); break;
    case HY_FIELD_U32: fprintf(o, "    uint32_t %s;\n", name); break;
    case HY_FIELD_U64: fprintf(o, "    uint64_t %s;\n", name); break;
    case HY_FIELD_I32: fprintf(o, "    int32_t %s;\n", name); break;
    case HY_FIELD_F64: fprintf(o, "    double %s;\n", name); break;
    case HY_FIELD_BYTES:
        if (f->count > 1)
            fprintf(o, "    uint8_t %s[%u][%u];\n", name, f->count, f->elem_size);
        else
            fprintf(o, "    uint8_t %s[%u];\n", name, f->elem_size);
        break;
    case HY_FIELD_STRING:
        fprintf(o, "    struct { uint16_t len; uint8_t _pad[6]; char data[%u]; } %s;\n",
                f->count, name);
        break;
    case HY_FIELD_VEC:
        if (f->elem_size == 1)
            fprintf(o, "    struct { uint16_t count; uint8_t _pad[6]; uint8_t data[%u]; } %s;\n",
                    f->count, name);
        else
            fprintf(o, "    struct { uint16_t count; uint8_t _pad[6]; uint8_t data[%u][%u]; } %s;\n",
                    f->count, f->elem_size, name);
        break;
    }
}

static int emit_c(FILE *o, const hy_schema *s)
{
    const char *src = base_name(s->path);
    char guard[256];
    upper_snake(src, guard, sizeof guard);
    for (char *p = guard; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    fprintf(o, "/* Generated by hypha-codegen %s from %s. Do not edit.\n"
               " *\n"
               " * One struct per message: the exact wire payload (#[repr(C)] layout, fields\n"
               " * in file order, zero padding). Encode with memcpy from the struct (zero it\n"
               " * first so padding is zero); decode with memcpy into it. String and Vec\n"
               " * fields carry a u16 length/count, 6 zero bytes and fixed capacity.\n"
               " */\n", HYPHA_VERSION, src);
    fprintf(o, "#ifndef HYPHA_GEN_%s_H\n#define HYPHA_GEN_%s_H\n\n", guard, guard);
    fprintf(o, "#include <stddef.h>\n#include <stdint.h>\n\n");
    fprintf(o, "#ifndef HY_GEN_UNUSED\n#if defined(__GNUC__)\n"
               "#define HY_GEN_UNUSED __attribute__((unused))\n#else\n#define HY_GEN_UNUSED\n"
               "#endif\n#endif\n\n");
    fprintf(o, "#define HY_SCHEMA_DIGEST_HEX \"%s\"\n", s->digest_hex);
    fprintf(o, "static const uint8_t HY_SCHEMA_DIGEST[32] HY_GEN_UNUSED = {");
    for (int i = 0; i < HY_DIGEST_LEN; i++)
        fprintf(o, "%s0x%02x", i ? ", " : "", s->digest[i]);
    fprintf(o, "};\n\n");
    for (size_t i = 0; i < s->nmsgs; i++) {
        char up[256];
        upper_snake(s->msgs[i].name, up, sizeof up);
        fprintf(o, "#define HY_TYPE_%s %uu\n", up, s->msgs[i].type_id);
    }
    fprintf(o, "\n");
    for (size_t i = 0; i < s->nmsgs; i++) {
        const hy_message *m = &s->msgs[i];
        fprintf(o, "/* %s: type %u, topic \"%s\", %u bytes */\n", m->name, m->type_id, m->topic,
                m->size);
        fprintf(o, "typedef struct %s {\n", m->name);
        for (size_t k = 0; k < m->nfields; k++) {
            char nb[128];
            c_field(o, &m->fields[k], ident(m->fields[k].name, nb, sizeof nb));
        }
        fprintf(o, "} %s;\n", m->name);
        fprintf(o, "_Static_assert(sizeof(%s) == %u, \"%s: size\");\n", m->name, m->size, m->name);
        fprintf(o, "_Static_assert(_Alignof(%s) == %u, \"%s: alignment\");\n", m->name, m->align,
                m->name);
        for (size_t k = 0; k < m->nfields; k++) {
            char nb[128];
            const char *fn = ident(m->fields[k].name, nb, sizeof nb);
            fprintf(o, "_Static_assert(offsetof(%s, %s) == %u, \"%s.%s: offset\");\n", m->name,
                    fn, m->fields[k].offset, m->name, fn);
            fprintf(o, "_Static_assert(sizeof(((%s *)0)->%s) == %u, \"%s.%s: size\");\n",
                    m->name, fn, m->fields[k].size, m->name, fn);
        }
        fprintf(o, "\n");
    }
    fprintf(o, "#ifndef HY_GEN_TYPE_DEFINED\n#define HY_GEN_TYPE_DEFINED\n"
               "typedef struct hy_gen_type {\n"
               "    uint16_t type_id;\n    const char *name;\n    const char *topic;\n"
               "    uint32_t size;\n} hy_gen_type;\n#endif\n\n");
    fprintf(o, "#define HY_TYPE_COUNT %zu\n", s->nmsgs);
    fprintf(o, "static const hy_gen_type HY_TYPES[HY_TYPE_COUNT] HY_GEN_UNUSED = {\n");
    for (size_t i = 0; i < s->nmsgs; i++)
        fprintf(o, "    {%u, \"%s\", \"%s\", %u},\n", s->msgs[i].type_id, s->msgs[i].name,
                s->msgs[i].topic, s->msgs[i].size);
    fprintf(o, "};\n\n#endif\n");
    return ferror(o) ? -1 : 0;
}

/* ---- Python module --------------------------------------------------------- */

static char scalar_code(hy_field_kind k)
{
    switch (k) {
    case HY_FIELD_U8: return 'B';
    case HY_FIELD_U16: return 'H';
    case HY_FIELD_U32: return 'I';
    case HY_FIELD_U64: return 'Q';
    case HY_FIELD_I32: return 'i';
    case HY_FIELD_F64: return 'd';
    default: return 0;
    }
}

/* The struct format of a message: explicit padding, no native alignment. */
static void py_format(const hy_message *m, char *out, size_t len)
{
    size_t k = 0;
    uint32_t at = 0;
#define PUT(...) do { int w_ = snprintf(out + k, k < len ? len - k : 0, __VA_ARGS__); if (w_ > 0) k += (size_t)w_; } while (0)
    PUT("<");
    for (size_t i = 0; i < m->nfields; i++) {
        const hy_field *f = &m->fields[i];
        if (f->offset > at)
            PUT("%ux", f->offset - at);
        char sc = scalar_code(f->kind);
        if (sc) {
            PUT("%c", sc);
        } else if (f->kind == HY_FIELD_BYTES) {
            PUT("%us", f->elem_size * f->count);
        } else {
            uint32_t data = f->elem_size * f->count;
            PUT("H6x%us", data);
            if (f->size > HY_VAR_HEADER + data)
                PUT("%ux", f->size - HY_VAR_HEADER - data);
        }
        at = f->offset + f->size;
    }
    if (m->size > at)
        PUT("%ux", m->size - at);
#undef PUT
}

static const char *py_type(const hy_field *f)
{
    switch (f->kind) {
    case HY_FIELD_F64: return "float";
    case HY_FIELD_BYTES: return f->count > 1 ? "List[bytes]" : "bytes";
    case HY_FIELD_STRING: return "str";
    case HY_FIELD_VEC: return f->elem_size == 1 ? "bytes" : "List[bytes]";
    default: return "int";
    }
}

static const char *py_default(const hy_field *f, char *buf, size_t len)
{
    switch (f->kind) {
    case HY_FIELD_F64: return "0.0";
    case HY_FIELD_BYTES:
        if (f->count > 1)
            snprintf(buf, len, "_field(default_factory=lambda: [b\"\\0\" * %u] * %u)",
                     f->elem_size, f->count);
        else
            snprintf(buf, len, "b\"\\0\" * %u", f->elem_size);
        return buf;
    case HY_FIELD_STRING: return "\"\"";
    case HY_FIELD_VEC: return f->elem_size == 1 ? "b\"\"" : "_field(default_factory=_list)";
    default: return "0";
    }
}

static bool all_scalar(const hy_message *m)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (!scalar_code(m->fields[i].kind))
            return false;
    return true;
}

static void py_message(FILE *o, const hy_message *m)
{
    char fmt[1024];
    py_format(m, fmt, sizeof fmt);
    fprintf(o, "\n\n_S_%s = _struct.Struct(\"%s\")\n", m->name, fmt);
    fprintf(o, "assert _S_%s.size == %u\n\n\n", m->name, m->size);
    fprintf(o, "@_dataclass(**_SLOTS)\nclass %s:\n", m->name);
    fprintf(o, "    \"\"\"Mycelium message %s: type %u, topic %s, %u bytes.\"\"\"\n\n", m->name,
            m->type_id, m->topic, m->size);
    fprintf(o, "    TYPE_ID: ClassVar[int] = %u\n", m->type_id);
    fprintf(o, "    TOPIC: ClassVar[str] = \"%s\"\n", m->topic);
    fprintf(o, "    SIZE: ClassVar[int] = %u\n", m->size);
    fprintf(o, "    NAME: ClassVar[str] = \"%s\"\n", m->name);
    fprintf(o, "    STRUCT: ClassVar[_struct.Struct] = _S_%s\n", m->name);
    fprintf(o, "    CODES: ClassVar[Dict[str, str]] = {");
    int first = 1;
    for (size_t i = 0; i < m->nfields; i++) {
        char sc = scalar_code(m->fields[i].kind);
        char nb[128];
        if (sc) {
            fprintf(o, "%s\"%s\": \"%c\"", first ? "" : ", ",
                    ident(m->fields[i].name, nb, sizeof nb), sc);
            first = 0;
        }
    }
    fprintf(o, "}\n\n");
    for (size_t i = 0; i < m->nfields; i++) {
        const hy_field *f = &m->fields[i];
        char nb[128], db[128];
        fprintf(o, "    %s: %s = %s\n", ident(f->name, nb, sizeof nb), py_type(f),
                py_default(f, db, sizeof db));
    }

    /* to_bytes: validate what struct would silently pad or truncate */
    fprintf(o, "\n    def to_bytes(self) -> bytes:\n");
    fprintf(o, "        \"\"\"The wire payload (%u bytes, zero padding).\"\"\"\n", m->size);
    fprintf(o, "        try:\n");
    for (size_t i = 0; i < m->nfields; i++) {
        const hy_field *f = &m->fields[i];
        char nb[128];
        const char *fn = ident(f->name, nb, sizeof nb);
        switch (f->kind) {
        case HY_FIELD_BYTES:
            if (f->count > 1)
                fprintf(o, "            _f%zu = _rows(self.%s, %u, %u, \"%s.%s\")\n", i, fn,
                        f->count, f->elem_size, m->name, fn);
            else
                fprintf(o, "            _f%zu = _fixed(self.%s, %u, \"%s.%s\")\n", i, fn,
                        f->elem_size, m->name, fn);
            break;
        case HY_FIELD_STRING:
            fprintf(o, "            _f%zu = _text(self.%s, %u, \"%s.%s\")\n", i, fn, f->count,
                    m->name, fn);
            break;
        case HY_FIELD_VEC:
            if (f->elem_size == 1)
                fprintf(o, "            _f%zu = _bytevec(self.%s, %u, \"%s.%s\")\n", i, fn,
                        f->count, m->name, fn);
            else
                fprintf(o, "            _f%zu = _vec(self.%s, %u, %u, \"%s.%s\")\n", i, fn,
                        f->count, f->elem_size, m->name, fn);
            break;
        default:
            break;
        }
    }
    fprintf(o, "            return _S_%s.pack(", m->name);
    for (size_t i = 0; i < m->nfields; i++) {
        const hy_field *f = &m->fields[i];
        char nb[128];
        const char *fn = ident(f->name, nb, sizeof nb);
        const char *sep = i ? ", " : "";
        if (scalar_code(f->kind))
            fprintf(o, "%sself.%s", sep, fn);
        else if (f->kind == HY_FIELD_BYTES)
            fprintf(o, "%s_f%zu", sep, i);
        else if (f->elem_size == 1)
            fprintf(o, "%slen(_f%zu), _f%zu", sep, i, i);
        else
            fprintf(o, "%slen(_f%zu) // %u, _f%zu", sep, i, f->elem_size, i);
    }
    fprintf(o, ")\n");
    fprintf(o, "        except (_struct.error, TypeError) as e:\n");
    fprintf(o, "            raise _explain(self, e) from None\n");

    /* from_bytes */
    fprintf(o, "\n    @classmethod\n");
    fprintf(o, "    def from_bytes(cls, data: bytes) -> \"%s\":\n", m->name);
    fprintf(o, "        \"\"\"Decode a %u-byte payload; padding content is ignored.\"\"\"\n", m->size);
    fprintf(o, "        if len(data) != %u:\n", m->size);
    fprintf(o, "            raise MessageError(f\"%s: payload is {len(data)} bytes, expected %u\")\n",
            m->name, m->size);
    if (all_scalar(m)) {
        fprintf(o, "        return cls(*_S_%s.unpack(data))\n", m->name);
    } else {
        fprintf(o, "        v = _S_%s.unpack(data)\n", m->name);
        fprintf(o, "        return cls(");
        size_t vi = 0;
        for (size_t i = 0; i < m->nfields; i++) {
            const hy_field *f = &m->fields[i];
            const char *sep = i ? ", " : "";
            char nb[128];
            const char *fn = ident(f->name, nb, sizeof nb);
            if (scalar_code(f->kind)) {
                fprintf(o, "%sv[%zu]", sep, vi);
                vi++;
            } else if (f->kind == HY_FIELD_BYTES) {
                if (f->count > 1)
                    fprintf(o, "%s_split(v[%zu], %u, %u)", sep, vi, f->count, f->elem_size);
                else
                    fprintf(o, "%sv[%zu]", sep, vi);
                vi++;
            } else if (f->kind == HY_FIELD_STRING) {
                fprintf(o, "%s_untext(v[%zu], v[%zu], %u, \"%s.%s\")", sep, vi, vi + 1, f->count,
                        m->name, fn);
                vi += 2;
            } else if (f->elem_size == 1) {
                fprintf(o, "%s_unbytevec(v[%zu], v[%zu], %u, \"%s.%s\")", sep, vi, vi + 1,
                        f->count, m->name, fn);
                vi += 2;
            } else {
                fprintf(o, "%s_unvec(v[%zu], v[%zu], %u, %u, \"%s.%s\")", sep, vi, vi + 1,
                        f->count, f->elem_size, m->name, fn);
                vi += 2;
            }
        }
        fprintf(o, ")\n");
    }
}

static const char py_prelude[] =
    "from __future__ import annotations\n"
    "\n"
    "import struct as _struct\n"
    "import sys as _sys\n"
    "from dataclasses import dataclass as _dataclass, field as _field\n"
    "from typing import Any, ClassVar, Dict, List\n"
    "\n"
    "_list = list  # a field may be called `list`; class bodies see fields first\n"
    "# Python >= 3.10: slotted classes, built faster and smaller (a worker makes one per frame)\n"
    "_SLOTS: Dict[str, Any] = {\"slots\": True} if _sys.version_info >= (3, 10) else {}\n"
    "\n"
    "\n"
    "class MessageError(ValueError):\n"
    "    \"\"\"A value does not fit its field, or a payload is malformed.\"\"\"\n"
    "\n"
    "\n"
    "def _fixed(v: Any, n: int, what: str) -> bytes:\n"
    "    if not isinstance(v, (bytes, bytearray, memoryview)):\n"
    "        raise MessageError(f\"{what}: expected {n} bytes, got {type(v).__name__}\")\n"
    "    if len(v) != n:\n"
    "        raise MessageError(f\"{what}: expected exactly {n} bytes, got {len(v)}\")\n"
    "    return v if isinstance(v, bytes) else bytes(v)\n"
    "\n"
    "\n"
    "def _rows(v: Any, rows: int, n: int, what: str) -> bytes:\n"
    "    if not isinstance(v, (list, tuple)) or len(v) != rows:\n"
    "        raise MessageError(f\"{what}: expected a list of {rows} items of {n} bytes\")\n"
    "    return b\"\".join(_fixed(r, n, what) for r in v)\n"
    "\n"
    "\n"
    "def _split(raw: bytes, rows: int, n: int) -> List[bytes]:\n"
    "    return [raw[i * n:(i + 1) * n] for i in range(rows)]\n"
    "\n"
    "\n"
    "def _text(v: Any, cap: int, what: str) -> bytes:\n"
    "    if not isinstance(v, str):\n"
    "        raise MessageError(f\"{what}: expected str, got {type(v).__name__}\")\n"
    "    b = v.encode(\"utf-8\")\n"
    "    if len(b) > cap:\n"
    "        raise MessageError(f\"{what}: {len(b)} bytes of UTF-8 is over its capacity of {cap}\")\n"
    "    return b\n"
    "\n"
    "\n"
    "def _untext(n: int, raw: bytes, cap: int, what: str) -> str:\n"
    "    if n > cap:\n"
    "        raise MessageError(f\"{what}: length {n} is over its capacity of {cap}\")\n"
    "    try:\n"
    "        return raw[:n].decode(\"utf-8\")\n"
    "    except UnicodeDecodeError as e:\n"
    "        raise MessageError(f\"{what}: not valid UTF-8 ({e.reason})\") from None\n"
    "\n"
    "\n"
    "def _bytevec(v: Any, cap: int, what: str) -> bytes:\n"
    "    if not isinstance(v, (bytes, bytearray, memoryview)):\n"
    "        raise MessageError(f\"{what}: expected bytes, got {type(v).__name__}\")\n"
    "    if len(v) > cap:\n"
    "        raise MessageError(f\"{what}: {len(v)} items is over its capacity of {cap}\")\n"
    "    return bytes(v)\n"
    "\n"
    "\n"
    "def _unbytevec(n: int, raw: bytes, cap: int, what: str) -> bytes:\n"
    "    if n > cap:\n"
    "        raise MessageError(f\"{what}: count {n} is over its capacity of {cap}\")\n"
    "    return raw[:n]\n"
    "\n"
    "\n"
    "def _vec(v: Any, cap: int, n: int, what: str) -> bytes:\n"
    "    if not isinstance(v, (list, tuple)):\n"
    "        raise MessageError(f\"{what}: expected a list of {n}-byte items, got {type(v).__name__}\")\n"
    "    if len(v) > cap:\n"
    "        raise MessageError(f\"{what}: {len(v)} items is over its capacity of {cap}\")\n"
    "    return b\"\".join(_fixed(x, n, what) for x in v)\n"
    "\n"
    "\n"
    "def _unvec(count: int, raw: bytes, cap: int, n: int, what: str) -> List[bytes]:\n"
    "    if count > cap:\n"
    "        raise MessageError(f\"{what}: count {count} is over its capacity of {cap}\")\n"
    "    return [raw[i * n:(i + 1) * n] for i in range(count)]\n"
    "\n"
    "\n"
    "def _explain(msg: Any, err: Exception) -> MessageError:\n"
    "    \"\"\"Name the field a struct.error came from (slow path, errors only).\"\"\"\n"
    "    for name, code in msg.CODES.items():\n"
    "        v = getattr(msg, name)\n"
    "        if code != \"d\" and (isinstance(v, bool) or not isinstance(v, int)):\n"
    "            return MessageError(f\"{msg.NAME}.{name}: expected int, got {type(v).__name__}\")\n"
    "        try:\n"
    "            _struct.pack(\"<\" + code, v)\n"
    "        except (_struct.error, TypeError) as e:\n"
    "            return MessageError(f\"{msg.NAME}.{name}: {e}\")\n"
    "    return MessageError(f\"{msg.NAME}: {err}\")\n";

static int emit_py(FILE *o, const hy_schema *s)
{
    const char *src = base_name(s->path);
    fprintf(o, "\"\"\"Mycelium messages of %s, generated by hypha-codegen %s. Do not edit.\n\n"
               "Each class is a dataclass whose to_bytes()/from_bytes() give the exact wire\n"
               "payload: the #[repr(C)] layout with zero padding. MESSAGES maps type ids to\n"
               "classes; SCHEMA_DIGEST is the SHA-256 of the contracts file.\n\"\"\"\n",
            src, HYPHA_VERSION);
    fputs(py_prelude, o);
    fprintf(o, "\n\nSCHEMA_DIGEST = \"%s\"\n", s->digest_hex);
    fprintf(o, "SCHEMA_FILE = \"%s\"\n", src);
    for (size_t i = 0; i < s->nmsgs; i++)
        py_message(o, &s->msgs[i]);
    fprintf(o, "\n\nMESSAGES: Dict[int, Any] = {\n");
    for (size_t i = 0; i < s->nmsgs; i++)
        fprintf(o, "    %u: %s,\n", s->msgs[i].type_id, s->msgs[i].name);
    fprintf(o, "}\nBY_NAME: Dict[str, Any] = {c.NAME: c for c in MESSAGES.values()}\n");
    fprintf(o, "\n\ndef decode(type_id: int, payload: bytes) -> Any:\n"
               "    \"\"\"Decode a payload by type id; MessageError for an unknown type.\"\"\"\n"
               "    cls = MESSAGES.get(type_id)\n"
               "    if cls is None:\n"
               "        raise MessageError(f\"unknown type id {type_id}\")\n"
               "    return cls.from_bytes(payload)\n");
    fprintf(o, "\n\n__all__ = [\"MessageError\", \"SCHEMA_DIGEST\", \"MESSAGES\", \"BY_NAME\", \"decode\"");
    for (size_t i = 0; i < s->nmsgs; i++)
        fprintf(o, ", \"%s\"", s->msgs[i].name);
    fprintf(o, "]\n");
    return ferror(o) ? -1 : 0;
}

/* Outputs are first written to temporary files beside their targets, and
 * renamed into place only when every one was written: a failed run leaves
 * neither a half-written file nor one output without the other. */
typedef struct out_file {
    const char *path;                           /* the requested output */
    int (*emit)(FILE *, const hy_schema *);
    char tmp[4096];                             /* its temporary, while pending */
} out_file;

static int write_tmp(out_file *f, const hy_schema *s)
{
    if (snprintf(f->tmp, sizeof f->tmp, "%s.XXXXXX", f->path) >= (int)sizeof f->tmp) {
        fprintf(stderr, "hypha-codegen: %s: path too long\n", f->path);
        f->tmp[0] = '\0';
        return -1;
    }
    int fd = mkstemp(f->tmp);
    if (fd < 0) {
        fprintf(stderr, "hypha-codegen: cannot write %s: %s\n", f->path, strerror(errno));
        f->tmp[0] = '\0';
        return -1;
    }
    FILE *o = fdopen(fd, "w");
    if (!o) {
        fprintf(stderr, "hypha-codegen: cannot write %s: %s\n", f->path, strerror(errno));
        close(fd);
        return -1;
    }
    int rc = f->emit(o, s);
    /* mkstemp makes 0600; generated sources are ordinary files */
    if (fchmod(fd, 0644) < 0)
        rc = -1;
    if (fclose(o) != 0)
        rc = -1;
    if (rc < 0)
        fprintf(stderr, "hypha-codegen: error writing %s\n", f->path);
    return rc;
}

static int write_outputs(out_file *files, size_t n, const hy_schema *s)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = write_tmp(&files[i], s);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (rename(files[i].tmp, files[i].path) < 0) {
            fprintf(stderr, "hypha-codegen: cannot write %s: %s\n", files[i].path, strerror(errno));
            rc = -1;
        } else {
            files[i].tmp[0] = '\0';
        }
    }
    for (size_t i = 0; i < n; i++)
        if (files[i].tmp[0])
            unlink(files[i].tmp);
    return rc;
}

static void usage(FILE *o)
{
    fprintf(o, "usage: hypha-codegen CONTRACTS.yaml [--c-out FILE.h] [--py-out FILE.py] [--digest]\n"
               "\n"
               "  --c-out FILE    write a C header: structs with _Static_assert on every size\n"
               "                  and offset, type-id constants, a type table, the digest\n"
               "  --py-out FILE   write a Python module: one dataclass per message\n"
               "  --digest        print the schema digest (SHA-256 of the file, hex)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"c-out", required_argument, NULL, 'c'}, {"py-out", required_argument, NULL, 'p'},
        {"digest", no_argument, NULL, 'd'},      {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},     {NULL, 0, NULL, 0},
    };
    const char *c_out = NULL, *py_out = NULL;
    int digest = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': c_out = optarg; break;
        case 'p': py_out = optarg; break;
        case 'd': digest = 1; break;
        case 'V': printf("hypha-codegen %s\n", HYPHA_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || (!c_out && !py_out && !digest)) {
        usage(stderr);
        return 2;
    }
    hy_err err = {{0}};
    hy_schema *s = hy_schema_load(argv[optind], &err);
    if (!s) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    if (check_names(s) < 0) {
        hy_schema_free(s);
        return 2;
    }
    out_file files[2];
    size_t n = 0;
    memset(files, 0, sizeof files);
    if (c_out)
        files[n++] = (out_file){.path = c_out, .emit = emit_c};
    if (py_out)
        files[n++] = (out_file){.path = py_out, .emit = emit_py};
    int rc = write_outputs(files, n, s) < 0 ? 1 : 0;
    if (digest && rc == 0)
        printf("%s\n", s->digest_hex);
    hy_schema_free(s);
    return rc;
}
