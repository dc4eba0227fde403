#!/usr/bin/env python3
"""Write a cmocka C test of the hypha-codegen headers from wire-vectors.json.

usage: make_c_vector_test.py WIRE_VECTORS_JSON OUT.c

For every message of every contracts file in the vectors, the emitted test
  encode: zeroes a struct of the generated type, assigns each field by name
          from `values` and compares the struct's bytes with payload_hex;
  decode: copies payload_hex into a struct and checks each field's value;
  meta:   checks sizeof, _Alignof, offsetof of every field, HY_TYPE_<NAME>
          and the HY_TYPES entry (type id, name, topic, size);
and for every contracts file it checks HY_SCHEMA_DIGEST(_HEX) and
HY_TYPE_COUNT.

The vectors do not say which type a field has, so the field types come from
the contracts file itself (next to wire-vectors.json, named by `contracts`),
read with the small block-YAML reader below. The layout computed from those
types is checked against the vectors' offsets, size and alignment before
anything is written, so a misread file stops the script instead of producing
a wrong test. Standard library only; the output depends only on the input.

test_codegen.py imports load_contracts(), field_type() and layout() from here.
"""
import json
import os
import re
import sys

# ---- a reader for the block-YAML subset the contracts files use ------------


class ContractsError(Exception):
    pass


def _strip_comment(text):
    """Drop a trailing `# comment` that is not inside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i]
    return text


def _lines(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            text = _strip_comment(raw.rstrip("\r\n")).rstrip()
            if not text.strip():
                continue
            if "\t" in text[: len(text) - len(text.lstrip())]:
                raise ContractsError(f"{path}:{lineno}: tab in indentation")
            out.append([len(text) - len(text.lstrip(" ")), text.lstrip(" "), lineno])
    return out


def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text.startswith("{") and text.endswith("}"):
        # flow mapping of plain scalars: {max_length: 2, not_empty: true}
        result = {}
        for part in filter(None, (p.strip() for p in text[1:-1].split(","))):
            k, sep, v = part.partition(":")
            if not sep:
                raise ContractsError(f"cannot read flow mapping {text!r}")
            result[k.strip()] = _scalar(v)
        return result
    return text


def _block(lines, i, indent, path):
    """Parse the mapping or list whose items sit at `indent`; (node, next i)."""
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        node = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
            rest = lines[i][1][1:].lstrip(" ")
            if not rest:
                i += 1
                if i < len(lines) and lines[i][0] > indent:
                    item, i = _block(lines, i, lines[i][0], path)
                else:
                    item = None
            elif re.match(r"^[^\"'{\[][^:]*:( |$)", rest):
                # "- key: value": a mapping whose first key sits after the dash
                col = indent + len(lines[i][1]) - len(rest)
                lines[i] = [col, rest, lines[i][2]]
                item, i = _block(lines, i, col, path)
            else:
                item = _scalar(rest)
                i += 1
            node.append(item)
        return node, i
    node = {}
    while i < len(lines) and lines[i][0] == indent:
        text, lineno = lines[i][1], lines[i][2]
        m = re.match(r"^([^\"'{\[][^:]*?|\"[^\"]*\"|'[^']*'):(?: (.*))?$", text)
        if not m or text.startswith("-"):
            raise ContractsError(f"{path}:{lineno}: cannot read {text!r}")
        key, rest = _scalar(m.group(1)), (m.group(2) or "").strip()
        if key in node:
            raise ContractsError(f"{path}:{lineno}: duplicate key {key!r}")
        i += 1
        if rest:
            node[key] = _scalar(rest)
        elif i < len(lines) and (
            lines[i][0] > indent or (lines[i][0] == indent and lines[i][1].startswith("-"))
        ):
            node[key], i = _block(lines, i, lines[i][0], path)
        else:
            node[key] = None
    return node, i


def read_yaml(path):
    lines = _lines(path)
    if not lines:
        return {}
    node, i = _block(lines, 0, lines[0][0], path)
    if i != len(lines):
        raise ContractsError(f"{path}:{lines[i][2]}: unexpected indentation")
    return node


# ---- the Mycelium type mapping (tests/vectors/README.md) --------------------

SCALARS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i32": 4, "f64": 8}
C_SCALAR_TYPES = {
    "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t",
    "u64": "uint64_t", "i32": "int32_t", "f64": "double",
}
_U8N = r"\[\s*u8\s*;\s*(\d+)\s*\]"


def field_type(type_text, max_length=None):
    """A dict: kind (a scalar name, 'bytes', 'string', 'vec'), size, align,
    elem (row/element size), count (rows, or capacity)."""
    t = type_text.strip()
    if t in SCALARS:
        return {"kind": t, "size": SCALARS[t], "align": SCALARS[t], "elem": SCALARS[t], "count": 1}
    m = re.fullmatch(_U8N, t)
    if t == "U256" or m:
        n = 32 if t == "U256" else int(m.group(1))
        return {"kind": "bytes", "size": n, "align": 1, "elem": n, "count": 1}
    m = re.fullmatch(r"\[\s*" + _U8N + r"\s*;\s*(\d+)\s*\]", t)
    if m:
        n, rows = int(m.group(1)), int(m.group(2))
        return {"kind": "bytes", "size": n * rows, "align": 1, "elem": n, "count": rows}
    if t == "String":
        kind, elem, cap = "string", 1, 32
    elif re.fullmatch(r"Vec<\s*u8\s*>", t):
        kind, elem, cap = "vec", 1, 16
    else:
        m = re.fullmatch(r"Vec<\s*" + _U8N + r"\s*>", t)
        if not m:
            raise ContractsError(f"unsupported type {type_text!r}")
        kind, elem, cap = "vec", int(m.group(1)), 4
    if max_length is not None:
        cap = int(max_length)
    size = 8 + elem * cap
    size += size % 2
    return {"kind": kind, "size": size, "align": 2, "elem": elem, "count": cap}


def load_contracts(path):
    """{message name: [(field name, type dict), ...] in file order}."""
    doc = read_yaml(path)
    msgs = doc.get("messages")
    if not isinstance(msgs, dict):
        raise ContractsError(f"{path}: no 'messages' mapping")
    out = {}
    for name, body in msgs.items():
        fields = []
        for fname, spec in body["fields"].items():
            if isinstance(spec, str):
                fields.append((fname, field_type(spec)))
                continue
            max_length = None
            validation = spec.get("validation") or []
            for rule in validation if isinstance(validation, list) else [validation]:
                if isinstance(rule, dict) and "max_length" in rule:
                    max_length = rule["max_length"]
            fields.append((fname, field_type(spec["type"], max_length)))
        out[name] = fields
    return out


def layout(fields):
    """#[repr(C)]: ([offset of each field], size, align)."""
    off, align, offsets = 0, 1, []
    for _, t in fields:
        off = -(-off // t["align"]) * t["align"]
        offsets.append(off)
        off += t["size"]
        align = max(align, t["align"])
    return offsets, -(-off // align) * align, align


def checked_fields(vectors_dir, entry):
    """The fields of every message of one contracts entry, checked against
    the vectors' layout: {message name: [(field, type), ...]}."""
    path = os.path.join(vectors_dir, entry["contracts"])
    contracts = load_contracts(path)
    names = sorted(m["name"] for m in entry["messages"])
    if sorted(contracts) != names:
        raise ContractsError(f"{path}: messages {sorted(contracts)} but vectors have {names}")
    for msg in entry["messages"]:
        fields = contracts[msg["name"]]
        offsets, size, align = layout(fields)
        want = list(msg["field_offsets"].items())
        got = [(f, o) for (f, _), o in zip(fields, offsets)]
        if got != want or size != msg["size"] or align != msg["align"]:
            raise ContractsError(
                f"{path}: {msg['name']}: layout from the contracts {got} size {size} align "
                f"{align} disagrees with the vectors {want} size {msg['size']} align {msg['align']}")
        if list(msg["values"]) != [f for f, _ in fields]:
            raise ContractsError(f"{path}: {msg['name']}: values do not name the fields in order")
    return contracts


# ---- C text ----------------------------------------------------------------


def upper_snake(name):
    """CamelCase -> CAMEL_CASE, as the HY_TYPE_<NAME> constants are named."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def c_string(data, text=False):
    """A C string literal holding exactly these bytes: raw bytes as \\xHH each,
    text readable with octal escapes (they stop after 3 digits)."""
    if not text:
        return '"' + "".join("\\x%02x" % b for b in data) + '"'
    out = []
    for b in data:
        ch = chr(b)
        if 0x20 <= b < 0x7F and ch not in "\"\\?":
            out.append(ch)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def c_bytes(data, indent="    ", per_line=12):
    rows = []
    for i in range(0, len(data), per_line):
        rows.append(indent + ", ".join("0x%02x" % b for b in data[i:i + per_line]) + ",")
    return "\n".join(rows)


def c_scalar(kind, v, what):
    if kind == "f64":
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ContractsError(f"{what}: {v} has no exact C literal here")
        return repr(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ContractsError(f"{what}: {v!r} is not an integer")
    lo, hi = {"u8": (0, 0xFF), "u16": (0, 0xFFFF), "u32": (0, 0xFFFFFFFF),
              "u64": (0, 2**64 - 1), "i32": (-2**31, 2**31 - 1)}[kind]
    if not lo <= v <= hi:
        raise ContractsError(f"{what}: {v} is out of range for {kind}")
    if kind == "u64":
        return f"UINT64_C({v})"
    if kind == "i32":
        return "(-2147483647 - 1)" if v == -2**31 else str(v)
    return f"{v}u"


def _hex(v, what):
    try:
        return bytes.fromhex(v)
    except (TypeError, ValueError):
        raise ContractsError(f"{what}: {v!r} is not hex text") from None


def field_code(var, fname, t, v, what):
    """(encode lines, decode-check lines) for one field."""
    enc, dec = [], []
    ref = f"{var}.{fname}"
    kind = t["kind"]
    if kind in SCALARS:
        lit = c_scalar(kind, v, what)
        enc.append(f"{ref} = {lit};")
        if kind == "f64":
            dec.append(f"assert_true({ref} == {lit}); /* exact: the value is a binary fraction */")
        else:
            dec.append(f"assert_int_equal({ref}, {lit});")
    elif kind == "bytes":
        rows = [_hex(x, what) for x in v] if t["count"] > 1 else [_hex(v, what)]
        if len(rows) != t["count"] or any(len(r) != t["elem"] for r in rows):
            raise ContractsError(f"{what}: expected {t['count']} x {t['elem']} bytes")
        for i, r in enumerate(rows):
            dst = f"{ref}[{i}]" if t["count"] > 1 else ref
            enc.append(f"memcpy({dst}, {c_string(r)}, {len(r)});")
            dec.append(f"assert_memory_equal({dst}, {c_string(r)}, {len(r)});")
    elif kind == "string":
        if not isinstance(v, str):
            raise ContractsError(f"{what}: expected text")
        b = v.encode("utf-8")
        if len(b) > t["count"]:
            raise ContractsError(f"{what}: {len(b)} bytes over capacity {t['count']}")
        enc.append(f"{ref}.len = {len(b)};")
        dec.append(f"assert_int_equal({ref}.len, {len(b)});")
        if b:
            enc.append(f"memcpy({ref}.data, {c_string(b, text=True)}, {len(b)});")
            dec.append(f"assert_memory_equal({ref}.data, {c_string(b, text=True)}, {len(b)});")
        if len(b) < t["count"]:
            dec.append(f"assert_memory_equal({ref}.data + {len(b)}, zeros, {t['count'] - len(b)});")
    else:  # vec
        if t["elem"] == 1:
            items = [bytes([x]) for x in _hex(v, what)]
        else:
            items = [_hex(x, what) for x in v]
            if any(len(x) != t["elem"] for x in items):
                raise ContractsError(f"{what}: every item must be {t['elem']} bytes")
        if len(items) > t["count"]:
            raise ContractsError(f"{what}: {len(items)} items over capacity {t['count']}")
        enc.append(f"{ref}.count = {len(items)};")
        dec.append(f"assert_int_equal({ref}.count, {len(items)});")
        if t["elem"] == 1:
            data = b"".join(items)
            if data:
                enc.append(f"memcpy({ref}.data, {c_string(data)}, {len(data)});")
                dec.append(f"assert_memory_equal({ref}.data, {c_string(data)}, {len(data)});")
        else:
            for i, r in enumerate(items):
                enc.append(f"memcpy({ref}.data[{i}], {c_string(r)}, {len(r)});")
                dec.append(f"assert_memory_equal({ref}.data[{i}], {c_string(r)}, {len(r)});")
        unused = (t["count"] - len(items)) * t["elem"]
        if unused:
            at = f"{ref}.data + {len(items)}" if t["elem"] == 1 else f"{ref}.data[{len(items)}]"
            dec.append(f"assert_memory_equal({at}, zeros, {unused});")
    return enc, dec


def prefix_of(contracts_name):
    """mycelium-examples.contracts.yaml -> examples (as tests/CMakeLists.txt names headers)."""
    p = re.sub(r"\.contracts\.ya?ml$", "", contracts_name)
    p = re.sub(r"^mycelium-", "", p)
    return re.sub(r"[^A-Za-z0-9_]", "_", p)


def generate(vectors_path):
    vectors_dir = os.path.dirname(os.path.abspath(vectors_path))
    with open(vectors_path, encoding="utf-8") as f:
        vectors = json.load(f)

    head, body, tests = [], [], []
    max_cap = 0  # the largest unused capacity a decode test compares with zeros
    head.append(
        "/* test_gen_vectors.c - generated by tests/codegen/make_c_vector_test.py from\n"
        " * wire-vectors.json. Do not edit.\n"
        " *\n"
        " * Every message of every contracts file in the vectors: the struct that\n"
        " * hypha-codegen emitted, filled field by field, must be payload_hex byte for\n"
        " * byte; payload_hex copied into it must give back every value; and its size,\n"
        " * alignment, offsets, HY_TYPE_<NAME> constant and HY_TYPES entry must match.\n"
        " */\n"
        "#include <setjmp.h>\n#include <stdarg.h>\n#include <stddef.h>\n#include <stdint.h>\n"
        "#include <string.h>\n#include <cmocka.h>\n")
    head.append(
        "/* Every generated header defines HY_SCHEMA_DIGEST, HY_SCHEMA_DIGEST_HEX,\n"
        " * HY_TYPES and HY_TYPE_COUNT. To include all of them in one file, each\n"
        " * header's two tables are renamed <prefix>_schema_digest and <prefix>_types\n"
        " * while it is included, and its two macros are copied and then #undef'd. */")
    for entry in vectors:
        p = prefix_of(entry["contracts"])
        head.append(
            f"#define HY_SCHEMA_DIGEST {p}_schema_digest\n"
            f"#define HY_TYPES {p}_types\n"
            f"#include \"{p}_msgs.h\"\n"
            f"#undef HY_SCHEMA_DIGEST\n#undef HY_TYPES\n"
            f"static const char {p}_schema_digest_hex[] = HY_SCHEMA_DIGEST_HEX;\n"
            f"static const size_t {p}_type_count = HY_TYPE_COUNT;\n"
            f"#undef HY_SCHEMA_DIGEST_HEX\n#undef HY_TYPE_COUNT\n")

    for entry in vectors:
        p = prefix_of(entry["contracts"])
        contracts = checked_fields(vectors_dir, entry)
        digest = entry["schema_digest"]
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ContractsError(f"{entry['contracts']}: schema_digest is not 64 hex digits")
        n = len(entry["messages"])
        body.append(
            f"/* ==== {entry['contracts']} ==== */\n\n"
            f"static void {p}_schema(void **state)\n{{\n"
            f"    static const uint8_t want[32] = {{\n{c_bytes(bytes.fromhex(digest), '        ')}\n    }};\n"
            f"    (void)state;\n"
            f"    assert_string_equal({p}_schema_digest_hex, \"{digest}\");\n"
            f"    assert_int_equal(sizeof {p}_schema_digest, 32);\n"
            f"    assert_memory_equal({p}_schema_digest, want, 32);\n"
            f"    assert_int_equal({p}_type_count, {n});\n"
            f"    assert_int_equal(sizeof {p}_types / sizeof {p}_types[0], {n});\n"
            f"}}\n")
        tests.append(f"{p}_schema")

        for msg in entry["messages"]:
            name, fields = msg["name"], contracts[msg["name"]]
            payload = bytes.fromhex(msg["payload_hex"])
            if len(payload) != msg["size"]:
                raise ContractsError(f"{name}: payload_hex is {len(payload)} bytes, size {msg['size']}")
            fn = f"{p}_{name}"
            enc, dec = [], []
            for fname, t in fields:
                e, d = field_code("m", fname, t, msg["values"][fname], f"{name}.{fname}")
                enc += e
                dec += d
            for line in dec:
                for z in re.findall(r"\bzeros, (\d+)\);", line):
                    max_cap = max(max_cap, int(z))
            ind = "\n    "
            body.append(
                f"/* {name}: type {msg['type_id']}, topic \"{msg['topic']}\", {msg['size']} bytes */\n"
                f"static const uint8_t {fn}_payload[{len(payload)}] = {{\n{c_bytes(payload)}\n}};\n\n"
                f"static void {fn}_encode(void **state)\n{{\n"
                f"    {name} m;\n    (void)state;\n"
                f"    memset(&m, 0, sizeof m); /* padding must be zero */\n"
                f"    {ind.join(enc)}\n"
                f"    assert_int_equal(sizeof m, sizeof {fn}_payload);\n"
                f"    assert_memory_equal(&m, {fn}_payload, sizeof {fn}_payload);\n"
                f"}}\n\n"
                f"static void {fn}_decode(void **state)\n{{\n"
                f"    {name} m;\n    (void)state;\n"
                f"    assert_int_equal(sizeof m, sizeof {fn}_payload);\n"
                f"    memcpy(&m, {fn}_payload, sizeof m);\n"
                f"    {ind.join(dec)}\n"
                f"}}\n\n"
                f"static void {fn}_meta(void **state)\n{{\n"
                f"    const hy_gen_type *t;\n    (void)state;\n"
                f"    assert_int_equal(sizeof({name}), {msg['size']});\n"
                f"    assert_int_equal(_Alignof({name}), {msg['align']});\n"
                + "".join(f"    assert_int_equal(offsetof({name}, {f}), {o});\n"
                          for f, o in msg["field_offsets"].items())
                + f"    assert_int_equal(HY_TYPE_{upper_snake(name)}, {msg['type_id']});\n"
                f"    t = find_type({p}_types, {p}_type_count, {msg['type_id']});\n"
                f"    assert_int_equal(t->type_id, {msg['type_id']});\n"
                f"    assert_string_equal(t->name, \"{name}\");\n"
                f"    assert_string_equal(t->topic, \"{msg['topic']}\");\n"
                f"    assert_int_equal(t->size, {msg['size']});\n"
                f"}}\n")
            tests += [f"{fn}_encode", f"{fn}_decode", f"{fn}_meta"]

    helpers = (
        (f"/* Unused capacity of a String or Vec must be zero. */\n"
         f"static const uint8_t zeros[{max_cap}];\n\n" if max_cap else "")
        + "/* The one HY_TYPES entry with this type id (fails on none or several). */\n"
        "static const hy_gen_type *find_type(const hy_gen_type *types, size_t n, unsigned id)\n"
        "{\n"
        "    const hy_gen_type *found = NULL;\n"
        "    for (size_t i = 0; i < n; i++) {\n"
        "        if (types[i].type_id == id) {\n"
        "            assert_null(found);\n"
        "            found = &types[i];\n"
        "        }\n"
        "    }\n"
        "    assert_non_null(found);\n"
        "    return found;\n"
        "}\n")
    main = (
        "int main(void)\n{\n    const struct CMUnitTest tests[] = {\n"
        + "".join(f"        cmocka_unit_test({t}),\n" for t in tests)
        + "    };\n    return cmocka_run_group_tests_name(\"gen_vectors\", tests, NULL, NULL);\n}\n")
    return "\n".join(head) + "\n" + helpers + "\n" + "\n".join(body) + "\n" + main


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: make_c_vector_test.py WIRE_VECTORS_JSON OUT.c\n")
        return 2
    try:
        text = generate(argv[1])
    except (ContractsError, OSError, KeyError, ValueError) as e:
        sys.stderr.write(f"make_c_vector_test.py: {type(e).__name__}: {e}\n")
        return 1
    tmp = argv[2] + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as f:
        f.write(text)
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
