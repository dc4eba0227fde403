"""hypha-codegen against the Mycelium wire vectors, and its command line.

Environment (set by tests/CMakeLists.txt; the fallbacks suit a source tree
with a build in build/):
  HYPHA_CODEGEN  the hypha-codegen binary
  HYPHA_VECTORS  tests/vectors (wire-vectors.json and the contracts files)
  HYPHA_BUILD, HYPHA_SOURCE  the build and source trees

Every message of every contracts file in wire-vectors.json gets its own test
methods (encode, decode, round trip, metadata, dispatch, wrong length, padding),
generated below from the vectors. Field types come from the contracts files,
read by make_c_vector_test.py (which checks them against the vectors' layout).

The name-clash tests pin generator bugs found while writing these tests
(fixed since): each says what used to go wrong.
"""
import ctypes
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("HYPHA_SOURCE") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("HYPHA_BUILD") or os.path.join(SOURCE, "build")
VECTORS = os.environ.get("HYPHA_VECTORS") or os.path.join(SOURCE, "tests", "vectors")
CODEGEN = os.environ.get("HYPHA_CODEGEN") or os.path.join(BUILD, "hypha-codegen")

sys.path.insert(0, HERE)
import make_c_vector_test as mcv  # noqa: E402  (the contracts reader)

with open(os.path.join(VECTORS, "wire-vectors.json"), encoding="utf-8") as _f:
    VECTOR_FILES = json.load(_f)

# prefix ("examples") -> {"entry": vectors entry, "path": contracts file,
#                         "fields": {message: [(field, type dict)]}}
CONTRACTS = {}
for _entry in VECTOR_FILES:
    CONTRACTS[mcv.prefix_of(_entry["contracts"])] = {
        "entry": _entry,
        "path": os.path.join(VECTORS, _entry["contracts"]),
        "fields": mcv.checked_fields(VECTORS, _entry),
    }
ALL_TYPE_IDS = {m["type_id"] for e in VECTOR_FILES for m in e["messages"]}

TMP = None      # temp dir of this run
MODS = {}       # prefix -> the generated module, imported
OUTPUTS = {}    # prefix -> (header bytes, module bytes) of the reference run


def run_codegen(args, cwd=None):
    return subprocess.run([CODEGEN] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def generate(contracts, outdir, stem="msgs", cwd=None):
    """Run hypha-codegen; return (header path, module path)."""
    os.makedirs(outdir, exist_ok=True)
    h, py = os.path.join(outdir, stem + ".h"), os.path.join(outdir, stem + ".py")
    r = run_codegen([contracts, "--c-out", h, "--py-out", py], cwd=cwd)
    if r.returncode != 0:
        raise AssertionError(f"hypha-codegen {contracts} failed ({r.returncode}): {r.stderr}")
    return h, py


def import_path(modname, path):
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod  # dataclasses looks the module up while the class is built
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[modname]
        raise
    return mod


def read(path):
    with open(path, "rb") as f:
        return f.read()


def setUpModule():
    global TMP
    if not os.access(CODEGEN, os.X_OK):
        raise RuntimeError(f"hypha-codegen not found at {CODEGEN} (set HYPHA_CODEGEN)")
    TMP = tempfile.mkdtemp(prefix="hypha-codegen-test-")
    for p, c in CONTRACTS.items():
        h, py = generate(c["path"], os.path.join(TMP, "ref"), f"{p}_msgs")
        OUTPUTS[p] = (read(h), read(py))
        MODS[p] = import_path(f"hypha_test_gen_{p}_msgs", py)


def tearDownModule():
    for p in list(MODS):
        sys.modules.pop(f"hypha_test_gen_{p}_msgs", None)
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


# ---- values from the vectors ----------------------------------------------


def py_value(t, v):
    """A `values` entry as the generated class takes it."""
    kind = t["kind"]
    if kind == "f64":
        return float(v)
    if kind in mcv.SCALARS or kind == "string":
        return v
    if kind == "bytes":
        return [bytes.fromhex(x) for x in v] if t["count"] > 1 else bytes.fromhex(v)
    return bytes.fromhex(v) if t["elem"] == 1 else [bytes.fromhex(x) for x in v]


def expected_object(cls, fields, values):
    return cls(**{f: py_value(t, values[f]) for f, t in fields})


def padding_bytes(fields, offsets, size):
    """Offsets of padding: gaps between fields and at the end, the 6 bytes
    after a String/Vec length, and the byte rounding an odd capacity up."""
    pad, end = [], 0
    for (_, t), off in zip(fields, offsets):
        pad += range(end, off)
        if t["kind"] in ("string", "vec"):
            pad += range(off + 2, off + 8)
            pad += range(off + 8 + t["elem"] * t["count"], off + t["size"])
        end = off + t["size"]
    pad += range(end, size)
    return pad


def unused_capacity(fields, offsets, values):
    """Offsets of String/Vec data past the length/count in the vector."""
    out = []
    for (f, t), off in zip(fields, offsets):
        if t["kind"] == "string":
            used = len(values[f].encode("utf-8"))
        elif t["kind"] == "vec":
            used = len(py_value(t, values[f])) * t["elem"]
        else:
            continue
        out += range(off + 8 + used, off + 8 + t["elem"] * t["count"])
    return out


def garble(payload, where):
    b = bytearray(payload)
    for k, i in enumerate(where):
        b[i] = 0xA5 ^ (k & 0x3F)  # never zero
    return bytes(b)


# ---- one set of tests per message of the vectors ---------------------------


class VectorTest(unittest.TestCase):
    """Generated Python module vs wire-vectors.json, message by message."""

    maxDiff = None


def _message_tests(p, msg, fields):
    name, payload = msg["name"], bytes.fromhex(msg["payload_hex"])
    offsets = list(msg["field_offsets"].values())

    def cls_and_obj(self):
        mod = MODS[p]
        self.assertIn(name, mod.BY_NAME)
        cls = mod.BY_NAME[name]
        return mod, cls, expected_object(cls, fields, msg["values"])

    def test_encode(self):
        _, _, obj = cls_and_obj(self)
        self.assertEqual(obj.to_bytes().hex(), msg["payload_hex"])

    def test_decode(self):
        _, cls, obj = cls_and_obj(self)
        got = cls.from_bytes(payload)
        self.assertIs(type(got), cls)
        self.assertEqual(got, obj)
        for f, t in fields:  # also the Python types, not only equality
            want = py_value(t, msg["values"][f])
            self.assertEqual(getattr(got, f), want, f)
            self.assertIs(type(getattr(got, f)), type(want), f)
            if isinstance(want, list):
                self.assertEqual([type(x) for x in getattr(got, f)], [type(x) for x in want], f)

    def test_round_trip(self):
        _, cls, _ = cls_and_obj(self)
        self.assertEqual(cls.from_bytes(payload).to_bytes(), payload)
        self.assertEqual(cls.from_bytes(bytearray(payload)).to_bytes(), payload)

    def test_meta(self):
        mod, cls, _ = cls_and_obj(self)
        self.assertEqual(cls.TYPE_ID, msg["type_id"])
        self.assertEqual(cls.TOPIC, msg["topic"])
        self.assertEqual(cls.SIZE, msg["size"])
        self.assertEqual(cls.NAME, name)
        self.assertEqual(cls.__name__, name)
        self.assertIs(mod.MESSAGES[msg["type_id"]], cls)
        self.assertEqual(len(cls().to_bytes()), msg["size"])

    def test_dispatch(self):
        mod, cls, obj = cls_and_obj(self)
        got = mod.decode(msg["type_id"], payload)
        self.assertIs(type(got), cls)
        self.assertEqual(got, obj)

    def test_wrong_length(self):
        mod, cls, _ = cls_and_obj(self)
        for bad in (payload[:-1], payload + b"\0", b"", payload * 2):
            with self.subTest(length=len(bad)):
                with self.assertRaises(mod.MessageError) as cm:
                    cls.from_bytes(bad)
                self.assertIn(name, str(cm.exception))
                self.assertIn(str(len(bad)), str(cm.exception))
                with self.assertRaises(mod.MessageError):
                    mod.decode(msg["type_id"], bad)

    tests = {"encode": test_encode, "decode": test_decode, "round_trip": test_round_trip,
             "meta": test_meta, "dispatch": test_dispatch, "wrong_length": test_wrong_length}

    pad = padding_bytes(fields, offsets, msg["size"])
    if pad:
        def test_padding_ignored(self):
            _, cls, obj = cls_and_obj(self)
            self.assertEqual([payload[i] for i in pad], [0] * len(pad), "vector padding is zero")
            bad = garble(payload, pad)
            self.assertEqual(sum(a != b for a, b in zip(bad, payload)), len(pad))
            self.assertEqual(cls.from_bytes(bad), obj)
            self.assertEqual(cls.from_bytes(bad).to_bytes(), payload)  # re-encoded: zero again
        tests["padding_ignored"] = test_padding_ignored

    unused = unused_capacity(fields, offsets, msg["values"])
    if unused:
        def test_unused_capacity_ignored(self):
            _, cls, obj = cls_and_obj(self)
            self.assertEqual([payload[i] for i in unused], [0] * len(unused))
            bad = garble(payload, unused)
            self.assertEqual(cls.from_bytes(bad), obj)
            self.assertEqual(cls.from_bytes(bad).to_bytes(), payload)
        tests["unused_capacity_ignored"] = test_unused_capacity_ignored

    for kind, fn in tests.items():
        fn.__name__ = f"test_{p}_{name}_{kind}"
        fn.__doc__ = f"{name} ({p}): {kind.replace('_', ' ')}"
        setattr(VectorTest, fn.__name__, fn)


def _module_tests(p, c):
    entry, messages = c["entry"], c["entry"]["messages"]

    def test_schema_digest(self):
        mod = MODS[p]
        self.assertEqual(mod.SCHEMA_DIGEST, entry["schema_digest"])
        self.assertEqual(mod.SCHEMA_DIGEST, hashlib.sha256(read(c["path"])).hexdigest())
        self.assertEqual(mod.SCHEMA_FILE, entry["contracts"])

    def test_registries(self):
        mod = MODS[p]
        self.assertEqual(sorted(mod.MESSAGES), sorted(m["type_id"] for m in messages))
        self.assertEqual(sorted(mod.BY_NAME), sorted(m["name"] for m in messages))
        for m in messages:
            self.assertIs(mod.MESSAGES[m["type_id"]], mod.BY_NAME[m["name"]])
            self.assertIs(getattr(mod, m["name"]), mod.BY_NAME[m["name"]])
        self.assertEqual(sorted(mod.__all__), sorted(
            ["MessageError", "SCHEMA_DIGEST", "MESSAGES", "BY_NAME", "decode"]
            + [m["name"] for m in messages]))

    def test_unknown_type_id(self):
        mod = MODS[p]
        self.assertTrue(issubclass(mod.MessageError, ValueError))
        mine = {m["type_id"] for m in messages}
        for tid in sorted((ALL_TYPE_IDS - mine) | {0, max(mine) + 1, 65535}):
            with self.subTest(type_id=tid):
                with self.assertRaises(mod.MessageError) as cm:
                    mod.decode(tid, b"")
                self.assertIn(str(tid), str(cm.exception))

    for kind, fn in (("schema_digest", test_schema_digest), ("registries", test_registries),
                     ("unknown_type_id", test_unknown_type_id)):
        fn.__name__ = f"test_{p}_{kind}"
        setattr(VectorTest, fn.__name__, fn)


for _p, _c in CONTRACTS.items():
    _module_tests(_p, _c)
    for _msg in _c["entry"]["messages"]:
        _message_tests(_p, _msg, _c["fields"][_msg["name"]])


# ---- values that do not fit ---------------------------------------------------


def vector(p, name):
    for m in CONTRACTS[p]["entry"]["messages"]:
        if m["name"] == name:
            return m
    raise KeyError(name)


def sample(p, name, **changes):
    """The vector's object with some fields changed."""
    m = vector(p, name)
    cls = MODS[p].BY_NAME[name]
    obj = expected_object(cls, CONTRACTS[p]["fields"][name], m["values"])
    for k, v in changes.items():
        setattr(obj, k, v)
    return obj


def payload_with(p, name, offset, data):
    b = bytearray.fromhex(vector(p, name)["payload_hex"])
    b[offset:offset + len(data)] = data
    return bytes(b)


class EncodeErrorTest(unittest.TestCase):
    """to_bytes() refuses what does not fit, naming Class.field."""

    def assert_refused(self, p, obj, where):
        mod = MODS[p]
        with self.assertRaises(mod.MessageError) as cm:
            obj.to_bytes()
        self.assertIsInstance(cm.exception, ValueError)
        self.assertIn(where, str(cm.exception))
        return str(cm.exception)

    def test_string_over_capacity(self):
        self.assertEqual(len(sample("examples", "TextMessage", sender="a" * 32).to_bytes()), 312)
        msg = self.assert_refused("examples", sample("examples", "TextMessage", sender="a" * 33),
                                  "TextMessage.sender")
        self.assertIn("33", msg)
        self.assertIn("32", msg)

    def test_string_over_capacity_in_utf8_bytes(self):
        s = "\u00e9\u00e9" + "a" * 29
        self.assertEqual((len(s), len(s.encode("utf-8"))), (31, 33))
        self.assert_refused("examples", sample("examples", "TextMessage", sender=s),
                            "TextMessage.sender")
        fits = "\u00e9" + "a" * 30  # 31 characters, 32 bytes
        obj = sample("examples", "TextMessage", sender=fits)
        self.assertEqual(MODS["examples"].TextMessage.from_bytes(obj.to_bytes()).sender, fits)

    def test_longer_string_capacity_from_max_length(self):
        # content has max_length 256 (not the default 32)
        obj = sample("examples", "TextMessage", content="b" * 256)
        self.assertEqual(MODS["examples"].TextMessage.from_bytes(obj.to_bytes()), obj)
        self.assert_refused("examples", sample("examples", "TextMessage", content="b" * 257),
                            "TextMessage.content")

    def test_vec_over_capacity(self):
        ten = [bytes([i]) * 20 for i in range(10)]
        obj = sample("examples", "BatchOperation", items=ten)
        self.assertEqual(MODS["examples"].BatchOperation.from_bytes(obj.to_bytes()).items, ten)
        msg = self.assert_refused(
            "examples", sample("examples", "BatchOperation", items=ten + [bytes(20)]),
            "BatchOperation.items")
        self.assertIn("11", msg)
        self.assert_refused("defi", sample("defi", "ArbitrageSignal", path=[bytes(20)] * 5),
                            "ArbitrageSignal.path")

    def test_vec_item_of_wrong_length(self):
        self.assert_refused("examples", sample("examples", "BatchOperation", items=[bytes(19)]),
                            "BatchOperation.items")
        self.assert_refused("examples", sample("examples", "BatchOperation", items=[bytes(21)]),
                            "BatchOperation.items")

    def test_fixed_bytes_of_wrong_length(self):
        for n in (0, 19, 21, 32):
            with self.subTest(n=n):
                self.assert_refused("defi", sample("defi", "PoolStateUpdate", pool_address=bytes(n)),
                                    "PoolStateUpdate.pool_address")
        self.assert_refused("defi", sample("defi", "PoolStateUpdate", reserve0=bytes(31)),
                            "PoolStateUpdate.reserve0")
        self.assert_refused("defi", sample("defi", "InstrumentMeta", token_address="00" * 20),
                            "InstrumentMeta.token_address")

    def test_integer_out_of_range(self):
        cu = MODS["examples"].CounterUpdate
        for ok in (2**31 - 1, -2**31):
            self.assertEqual(cu.from_bytes(sample("examples", "CounterUpdate", value=ok).to_bytes()).value, ok)
        for bad in (2**31, -2**31 - 1):
            with self.subTest(value=bad):
                self.assert_refused("examples", sample("examples", "CounterUpdate", value=bad),
                                    "CounterUpdate.value")
        for bad in (-1, 2**64):
            with self.subTest(counter_id=bad):
                self.assert_refused("examples", sample("examples", "CounterUpdate", counter_id=bad),
                                    "CounterUpdate.counter_id")
        self.assert_refused("defi", sample("defi", "InstrumentMeta", decimals=256),
                            "InstrumentMeta.decimals")
        self.assert_refused("defi", sample("defi", "PoolStateUpdate", venue_id=65536),
                            "PoolStateUpdate.venue_id")
        self.assert_refused("game", sample("game", "GameState", player_count=2**32),
                            "GameState.player_count")

    def test_wrong_type(self):
        self.assert_refused("examples", sample("examples", "CounterUpdate", counter_id="5"),
                            "CounterUpdate.counter_id")
        self.assert_refused("examples", sample("examples", "CounterUpdate", delta=1.5),
                            "CounterUpdate.delta")
        self.assert_refused("examples", sample("examples", "CounterUpdate", value=None),
                            "CounterUpdate.value")
        self.assert_refused("examples", sample("examples", "TextMessage", timestamp="0"),
                            "TextMessage.timestamp")
        self.assert_refused("examples", sample("examples", "TextMessage", sender=b"abc"),
                            "TextMessage.sender")
        self.assert_refused("game", sample("game", "PlayerPosition", x="1.0"), "PlayerPosition.x")
        self.assert_refused("defi", sample("defi", "PoolStateUpdate", pool_address="ab" * 20),
                            "PoolStateUpdate.pool_address")
        self.assert_refused("examples", sample("examples", "BatchOperation", items=bytes(20)),
                            "BatchOperation.items")

    def test_wrong_type_for_a_vec(self):
        # Was a bug: None or an int for a Vec field fails inside len(), and the
        # message names only the class: "BatchOperation: object of type
        # 'NoneType' has no len()".
        for bad in (None, 5):
            with self.subTest(items=bad):
                self.assert_refused("examples", sample("examples", "BatchOperation", items=bad),
                                    "BatchOperation.items")

    def test_memoryview_for_fixed_bytes(self):
        # Was a bug: _fixed() accepts a memoryview for [u8; N], then struct.pack
        # rejects it with "PoolStateUpdate: argument for 's' must be a bytes
        # object" (no field named). Either encoding it or naming the field
        # would be right.
        obj = sample("defi", "PoolStateUpdate")
        obj.pool_address = memoryview(bytes(obj.pool_address))
        try:
            got = obj.to_bytes()
        except MODS["defi"].MessageError as e:
            self.assertIn("PoolStateUpdate.pool_address", str(e))
        else:
            self.assertEqual(got.hex(), vector("defi", "PoolStateUpdate")["payload_hex"])


class DecodeErrorTest(unittest.TestCase):
    """from_bytes() refuses a malformed payload, naming Class.field."""

    def assert_refused(self, p, name, payload, where):
        mod = MODS[p]
        with self.assertRaises(mod.MessageError) as cm:
            mod.BY_NAME[name].from_bytes(payload)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertIn(where, str(cm.exception))
        with self.assertRaises(mod.MessageError):
            mod.decode(mod.BY_NAME[name].TYPE_ID, payload)
        return str(cm.exception)

    def test_string_length_over_capacity(self):
        tm = MODS["examples"].TextMessage
        full = payload_with("examples", "TextMessage", 0, (32).to_bytes(2, "little") + bytes(6) + b"a" * 32)
        self.assertEqual(tm.from_bytes(full).sender, "a" * 32)
        msg = self.assert_refused("examples", "TextMessage",
                                  payload_with("examples", "TextMessage", 0, (33).to_bytes(2, "little")),
                                  "TextMessage.sender")
        self.assertIn("33", msg)
        self.assert_refused("examples", "TextMessage",
                            payload_with("examples", "TextMessage", 0, b"\xff\xff"),
                            "TextMessage.sender")
        self.assert_refused("examples", "TextMessage",
                            payload_with("examples", "TextMessage", 40, (257).to_bytes(2, "little")),
                            "TextMessage.content")
        self.assert_refused("defi", "InstrumentMeta",
                            payload_with("defi", "InstrumentMeta", 20, (33).to_bytes(2, "little")),
                            "InstrumentMeta.symbol")

    def test_invalid_utf8(self):
        # the vector's strings are "h\xc3\xa9llo-N": an invalid byte, the
        # e-acute cut in half by the length, a lone continuation byte
        self.assertEqual(bytes.fromhex(vector("examples", "TextMessage")["payload_hex"])[8:11],
                         b"h\xc3\xa9")
        self.assert_refused("examples", "TextMessage",
                            payload_with("examples", "TextMessage", 8 + 1, b"\xff"), "TextMessage.sender")
        self.assert_refused("examples", "TextMessage",
                            payload_with("examples", "TextMessage", 0, (2).to_bytes(2, "little")),
                            "TextMessage.sender")
        self.assert_refused("examples", "TextMessage",
                            payload_with("examples", "TextMessage", 40 + 8 + 1, b"\x80"),
                            "TextMessage.content")

    def test_vec_count_over_capacity(self):
        bo = MODS["examples"].BatchOperation
        ten = payload_with("examples", "BatchOperation", 8, (10).to_bytes(2, "little"))
        self.assertEqual(len(bo.from_bytes(ten).items), 10)
        msg = self.assert_refused("examples", "BatchOperation",
                                  payload_with("examples", "BatchOperation", 8, (11).to_bytes(2, "little")),
                                  "BatchOperation.items")
        self.assertIn("11", msg)
        self.assert_refused("defi", "ArbitrageSignal",
                            payload_with("defi", "ArbitrageSignal", 8, (5).to_bytes(2, "little")),
                            "ArbitrageSignal.path")


# ---- every supported type, checked against the C ABI via ctypes -------------

ALL_TYPES_YAML = """\
# Every type hypha accepts, in an order that needs padding everywhere.
messages:
  AllTypes:
    tlv_type: 4242
    domain: MarketData
    fields:
      a: u8
      b: u16
      c: u8
      s:
        type: String
        validation:
          - max_length: 5
      d: u32
      bv:
        type: "Vec<u8>"
        validation:
          - max_length: 3
      e: u8
      v32:
        type: "Vec<[u8; 32]>"
        validation: {max_length: 2}
      grid: "[[u8; 3]; 2]"
      f: f64
      g: i32
      h: u64
      v20: "Vec<[u8; 20]>"
      s32: String
      big: U256
      seven: "[u8; 7]"
      bv16: Vec<u8>
      z: u8
  Tiny:
    tlv_type: 7
    domain: Signal
    fields:
      only: u8
  Short:
    tlv_type: 8
    domain: MARKETDATA
    fields:
      w: u16
      x: u8
"""

ALL_TYPES_VALUES = {
    "a": 0xFE, "b": 0xBEEF, "c": 7, "s": "h\u00e9!", "d": 0xDEADBEEF, "bv": b"\x01\x02",
    "e": 9, "v32": [bytes(range(32))], "grid": [b"abc", b"def"], "f": -0.15625, "g": -5,
    "h": 2**64 - 2, "v20": [bytes([1] * 20), bytes([2] * 20), bytes([3] * 20)],
    "s32": "x" * 31, "big": bytes(range(100, 132)), "seven": b"1234567", "bv16": bytes(range(16)),
    "z": 0x5A,
}


def ctypes_field(t):
    u8 = ctypes.c_uint8
    scal = {"u8": u8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "u64": ctypes.c_uint64,
            "i32": ctypes.c_int32, "f64": ctypes.c_double}
    if t["kind"] in scal:
        return scal[t["kind"]]
    if t["kind"] == "bytes":
        return (u8 * t["elem"]) * t["count"] if t["count"] > 1 else u8 * t["elem"]
    data = u8 * t["count"] if t["elem"] == 1 else (u8 * t["elem"]) * t["count"]

    class Var(ctypes.Structure):
        _fields_ = [("n", ctypes.c_uint16), ("pad", u8 * 6), ("data", data)]
    return Var


def ctypes_payload(fields, values):
    """(bytes, {field: offset}, sizeof, alignof) of a C struct filled by hand."""
    class S(ctypes.Structure):
        _fields_ = [(f, ctypes_field(t)) for f, t in fields]
    s = S()
    base = ctypes.addressof(s)
    for f, t in fields:
        v, off = values[f], getattr(S, f).offset
        if t["kind"] in mcv.SCALARS:
            setattr(s, f, v)
            continue
        if t["kind"] == "string":
            v = v.encode("utf-8")
        if t["kind"] in ("string", "vec"):
            n = len(v)
            ctypes.memmove(base + off, n.to_bytes(2, "little"), 2)
            off += 8
        raw = b"".join(v) if isinstance(v, list) else bytes(v)
        ctypes.memmove(base + off, raw, len(raw))
    offsets = {f: getattr(S, f).offset for f, _ in fields}
    return bytes(s), offsets, ctypes.sizeof(S), ctypes.alignment(S)


class AllTypesTest(unittest.TestCase):
    """A contracts file with every supported type: the generated module must
    lay it out as the platform C compiler does (ctypes here, cc below)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "alltypes")
        os.makedirs(cls.dir)
        cls.contracts = os.path.join(cls.dir, "all.contracts.yaml")
        with open(cls.contracts, "w", encoding="utf-8") as f:
            f.write(ALL_TYPES_YAML)
        cls.header, py = generate(cls.contracts, cls.dir, "all_msgs")
        cls.mod = import_path("hypha_test_gen_all_msgs", py)
        cls.fields = mcv.load_contracts(cls.contracts)

    @classmethod
    def tearDownClass(cls):
        sys.modules.pop("hypha_test_gen_all_msgs", None)

    def test_layout_and_bytes_match_ctypes(self):
        fields = self.fields["AllTypes"]
        want, offsets, size, align = ctypes_payload(fields, ALL_TYPES_VALUES)
        self.assertEqual(mcv.layout(fields), (list(offsets.values()), size, align))
        cls = self.mod.AllTypes
        self.assertEqual(cls.SIZE, size)
        obj = cls(**ALL_TYPES_VALUES)
        self.assertEqual(obj.to_bytes().hex(), want.hex())
        self.assertEqual(cls.from_bytes(want), obj)

    def test_small_messages_match_ctypes(self):
        for name, values in (("Tiny", {"only": 200}), ("Short", {"w": 0x1234, "x": 0x56})):
            with self.subTest(name):
                want, _, size, _ = ctypes_payload(self.fields[name], values)
                cls = self.mod.BY_NAME[name]
                self.assertEqual(cls.SIZE, size)
                self.assertEqual(cls(**values).to_bytes(), want)
                self.assertEqual(cls.from_bytes(want), cls(**values))

    def test_topics(self):
        self.assertEqual({c.NAME: c.TOPIC for c in self.mod.MESSAGES.values()},
                         {"AllTypes": "market-data", "Tiny": "signal", "Short": "market-data"})

    def test_defaults_encode_to_zero(self):
        for cls in self.mod.MESSAGES.values():
            with self.subTest(cls.NAME):
                self.assertEqual(cls().to_bytes(), bytes(cls.SIZE))
                self.assertEqual(cls.from_bytes(bytes(cls.SIZE)), cls())

    def test_capacities(self):
        A, err = self.mod.AllTypes, self.mod.MessageError
        for field, bad in (("s", "abcdef"), ("bv", b"1234"), ("v32", [bytes(32)] * 3),
                           ("v20", [bytes(20)] * 5), ("s32", "y" * 33), ("bv16", bytes(17)),
                           ("grid", [b"abc"]), ("grid", [b"abc", b"de"]), ("seven", b"123456")):
            with self.subTest(field=field, bad=bad):
                obj = A(**ALL_TYPES_VALUES)
                setattr(obj, field, bad)
                with self.assertRaises(err) as cm:
                    obj.to_bytes()
                self.assertIn(f"AllTypes.{field}", str(cm.exception))

    def test_c_header_agrees_with_the_compiler(self):
        cc = shutil.which("cc")
        if not cc:
            self.skipTest("no cc on PATH")
        r = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                            self.header], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        self.assertEqual((r.returncode, r.stdout), (0, ""))


# ---- the generated files themselves ---------------------------------------------


class GeneratedFilesTest(unittest.TestCase):

    def test_python_module_imports_without_warnings(self):
        for p, (_, py) in OUTPUTS.items():
            with self.subTest(p):
                d = tempfile.mkdtemp(dir=TMP)  # fresh: no __pycache__, so it compiles
                with open(os.path.join(d, f"{p}_msgs.py"), "wb") as f:
                    f.write(py)
                r = subprocess.run([sys.executable, "-B", "-W", "error", "-X", "dev", "-c",
                                    f"import {p}_msgs as m; assert m.MESSAGES"], cwd=d,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   universal_newlines=True)
                self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_c_header_compiles_on_its_own(self):
        cc = shutil.which("cc")
        if not cc:
            self.skipTest("no cc on PATH")
        flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
        for p, (h, _) in OUTPUTS.items():
            with self.subTest(p):
                d = tempfile.mkdtemp(dir=TMP)
                hp = os.path.join(d, f"{p}_msgs.h")
                with open(hp, "wb") as f:
                    f.write(h)
                r = subprocess.run([cc] + flags + [hp], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, universal_newlines=True)
                self.assertEqual((r.returncode, r.stdout), (0, ""))
                # the only include of a translation unit, twice (include guard)
                c = os.path.join(d, "only.c")
                with open(c, "w") as f:
                    f.write(f'#include "{p}_msgs.h"\n#include "{p}_msgs.h"\n'
                            "int main(void) { return HY_TYPE_COUNT == 0; }\n")
                r = subprocess.run([cc] + flags + [c], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, universal_newlines=True)
                self.assertEqual((r.returncode, r.stdout), (0, ""))

    def test_c_header_constants(self):
        # the header's own numbers, read as text (the C test compiles them)
        for p, (h, _) in OUTPUTS.items():
            text = h.decode("ascii")
            entry = CONTRACTS[p]["entry"]
            with self.subTest(p):
                self.assertIn(f'#define HY_SCHEMA_DIGEST_HEX "{entry["schema_digest"]}"\n', text)
                self.assertIn(f"#define HY_TYPE_COUNT {len(entry['messages'])}\n", text)
                for m in entry["messages"]:
                    self.assertIn(f"#define HY_TYPE_{mcv.upper_snake(m['name'])} {m['type_id']}u\n", text)
                    self.assertIn(f'    {{{m["type_id"]}, "{m["name"]}", "{m["topic"]}", {m["size"]}}},\n', text)


class DeterminismTest(unittest.TestCase):

    def test_same_output_twice(self):
        for p, c in CONTRACTS.items():
            with self.subTest(p):
                h, py = generate(c["path"], os.path.join(TMP, "again"), f"{p}_msgs")
                self.assertEqual(read(h), OUTPUTS[p][0])
                self.assertEqual(read(py), OUTPUTS[p][1])
                h, py = generate(c["path"], os.path.join(TMP, "again"), f"{p}_msgs")
                self.assertEqual(read(h), OUTPUTS[p][0])
                self.assertEqual(read(py), OUTPUTS[p][1])

    def test_output_independent_of_directories(self):
        for p, c in CONTRACTS.items():
            with self.subTest(p):
                elsewhere = os.path.join(TMP, "elsewhere", p, "deeper")
                os.makedirs(elsewhere)
                copy = os.path.join(elsewhere, os.path.basename(c["path"]))
                shutil.copyfile(c["path"], copy)
                # absolute path, other output names and directory
                h, py = generate(copy, os.path.join(TMP, "out-abs", p), "other_name")
                self.assertEqual(read(h), OUTPUTS[p][0])
                self.assertEqual(read(py), OUTPUTS[p][1])
                # relative path, run from the copy's directory
                h, py = generate(os.path.basename(copy), os.path.join(TMP, "out-rel", p), "x",
                                 cwd=elsewhere)
                self.assertEqual(read(h), OUTPUTS[p][0])
                self.assertEqual(read(py), OUTPUTS[p][1])

    def test_output_names_the_contracts_file_not_its_directory(self):
        for p, (h, py) in OUTPUTS.items():
            with self.subTest(p):
                for out in (h, py):
                    self.assertIn(os.path.basename(CONTRACTS[p]["path"]).encode(), out)
                    self.assertNotIn(VECTORS.encode(), out)
                    self.assertNotIn(TMP.encode(), out)


# ---- command line ------------------------------------------------------------------

BAD_TYPE_YAML = """\
# a comment line
messages:
  Bad:
    tlv_type: 7
    domain: Test
    fields:
      ok: u64
      big:
        type: {ty}
"""


class CliTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=TMP)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_no_arguments(self):
        r = run_codegen([])
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stderr.startswith("usage: hypha-codegen "), r.stderr)
        self.assertEqual(r.stdout, "")

    def test_bad_usage(self):
        good = CONTRACTS["examples"]["path"]
        for args in ([good], [good, good, "--digest"], ["--bogus", good], [good, "--c-out"]):
            with self.subTest(args=args):
                r = run_codegen(args)
                self.assertEqual(r.returncode, 2)
                self.assertIn("usage: hypha-codegen", r.stderr)
                self.assertEqual(r.stdout, "")

    def test_help(self):
        r = run_codegen(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("usage: hypha-codegen "), r.stdout)

    def test_digest(self):
        for p, c in CONTRACTS.items():
            with self.subTest(p):
                r = run_codegen([c["path"], "--digest"])
                self.assertEqual((r.returncode, r.stderr), (0, ""))
                self.assertEqual(r.stdout, hashlib.sha256(read(c["path"])).hexdigest() + "\n")
                self.assertEqual(r.stdout, c["entry"]["schema_digest"] + "\n")

    def test_digest_follows_the_bytes(self):
        src = read(CONTRACTS["game"]["path"])
        path = self.write("game.contracts.yaml", src.decode() + "# one more comment\n")
        r = run_codegen([path, "--digest"])
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, hashlib.sha256(read(path)).hexdigest() + "\n")
        self.assertNotEqual(r.stdout.strip(), CONTRACTS["game"]["entry"]["schema_digest"])

    def assert_bad_type(self, ty, col_of):
        text = BAD_TYPE_YAML.format(ty=ty)
        path = self.write("bad.contracts.yaml", text)
        line_no = next(i for i, l in enumerate(text.splitlines(), 1) if "type: " + ty in l)
        col = text.splitlines()[line_no - 1].index(col_of) + 1
        h, py = os.path.join(self.dir, "out.h"), os.path.join(self.dir, "out.py")
        with open(py, "w") as f:
            f.write("previous contents\n")
        before = sorted(os.listdir(self.dir))
        r = run_codegen([path, "--c-out", h, "--py-out", py])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        first = r.stderr.splitlines()[0]
        self.assertTrue(first.startswith(f"{path}:{line_no}:{col}: "), first)
        self.assertIn("unsupported type 'i64'", first)
        self.assertIn("Bad.big", first)
        # nothing written: no header, the old module untouched, no temp files
        self.assertEqual(sorted(os.listdir(self.dir)), before)
        self.assertFalse(os.path.exists(h))
        self.assertEqual(read(py), b"previous contents\n")

    def test_unsupported_type_quoted(self):
        self.assert_bad_type('"i64"', '"i64"')

    def test_unsupported_type_plain(self):
        self.assert_bad_type("i64", "i64")

    def test_unsupported_type_shorthand(self):
        text = BAD_TYPE_YAML.replace("      big:\n        type: {ty}\n", "      big: i64\n")
        path = self.write("short.contracts.yaml", text)
        r = run_codegen([path, "--digest"])
        self.assertEqual((r.returncode, r.stdout), (2, ""))
        self.assertTrue(r.stderr.startswith(f"{path}:8:12: "), r.stderr)
        self.assertIn("unsupported type 'i64'", r.stderr)

    def test_missing_file(self):
        path = os.path.join(self.dir, "nope.yaml")
        h = os.path.join(self.dir, "out.h")
        r = run_codegen([path, "--c-out", h])
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)
        self.assertEqual(os.listdir(self.dir), [])

    def test_unwritable_output_leaves_nothing_behind(self):
        target = os.path.join(self.dir, "is-a-dir")
        os.mkdir(target)
        r = run_codegen([CONTRACTS["game"]["path"], "--py-out", target])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(target, r.stderr)
        self.assertEqual(os.listdir(self.dir), ["is-a-dir"])
        self.assertEqual(os.listdir(target), [])

    def test_one_failing_output_writes_neither(self):
        # --c-out cannot be written: the Python module must not appear alone.
        py = os.path.join(self.dir, "ok.py")
        bad = os.path.join(self.dir, "no-such-dir", "x.h")
        r = run_codegen([CONTRACTS["game"]["path"], "--c-out", bad, "--py-out", py])
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"cannot write {bad}: No such file or directory", r.stderr)
        self.assertEqual(os.listdir(self.dir), [])


# ---- generator bugs found by these tests (see the module docstring) ----------------


class NameClashTest(unittest.TestCase):
    """Names the contracts loader accepts must either be refused with exit
    status 2 or give outputs that work."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=TMP)

    def works_or_refused(self, yaml_text, stem):
        path = os.path.join(self.dir, stem + ".contracts.yaml")
        with open(path, "w") as f:
            f.write(yaml_text)
        h, py = os.path.join(self.dir, stem + ".h"), os.path.join(self.dir, stem + ".py")
        r = run_codegen([path, "--c-out", h, "--py-out", py])
        if r.returncode == 2:
            self.assertIn(path, r.stderr)
            return None
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        mod = import_path(f"hypha_test_{stem}", py)
        self.addCleanup(sys.modules.pop, f"hypha_test_{stem}", None)
        for cls in mod.MESSAGES.values():
            self.assertEqual(cls.from_bytes(cls().to_bytes()), cls())
        cc = shutil.which("cc")
        if cc:
            c = os.path.join(self.dir, stem + ".c")
            with open(c, "w") as f:
                f.write(f'#include "{stem}.h"\nint main(void) {{ return HY_TYPE_COUNT == 0; }}\n')
            rc = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", c],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True)
            self.assertEqual((rc.returncode, rc.stdout), (0, ""))
        return mod

    def test_field_named_like_a_helper(self):
        # Was a bug: to_bytes() kept per-field locals named `_<field>`, so a
        # field `text` made the local `_text` shadow the helper _text():
        # UnboundLocalError on the first encode.
        mod = self.works_or_refused(
            "messages:\n  M:\n    tlv_type: 5\n    domain: T\n    fields:\n"
            "      text: String\n      fixed: \"[u8; 4]\"\n      vec: \"Vec<[u8; 20]>\"\n", "helper_names")
        self.assertIsNotNone(mod)
        m = mod.M(text="hi", fixed=b"abcd", vec=[bytes(20)])
        self.assertEqual(mod.M.from_bytes(m.to_bytes()), m)

    def test_refusals_name_the_message(self):
        path = os.path.join(self.dir, "kw.contracts.yaml")
        with open(path, "w") as f:
            f.write("messages:\n  struct:\n    tlv_type: 7\n    domain: T\n    fields:\n      a: u64\n")
        h = os.path.join(self.dir, "kw.h")
        r = run_codegen([path, "--c-out", h])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(), f"{path}:2:3: message struct: the name is reserved in generated "
                                           "C or Python (a keyword, a C type, a name the module uses, or a leading '_')")
        self.assertFalse(os.path.exists(h))

    def test_ordinary_field_names_work(self):
        # the control for the tests below: same shape, harmless names
        self.works_or_refused(
            "messages:\n  M:\n    tlv_type: 5\n    domain: T\n    fields:\n"
            "      count: u64\n      items: \"Vec<[u8; 20]>\"\n      addr: \"[u8; 20]\"\n", "ok")

    def test_field_named_field(self):
        # Was a bug: the class body's `field(default_factory=list)` for `items` then
        # calls the earlier field's default 0: "TypeError: 'int' object is not
        # callable" on import.
        self.works_or_refused(
            "messages:\n  M:\n    tlv_type: 5\n    domain: T\n    fields:\n"
            "      field: u64\n      items: \"Vec<[u8; 20]>\"\n", "field_named_field")

    def test_field_named_bytes(self):
        # Was a bug: `addr: bytes = bytes(20)` calls the earlier field `bytes` (0).
        self.works_or_refused(
            "messages:\n  M:\n    tlv_type: 5\n    domain: T\n    fields:\n"
            "      bytes: u16\n      addr: \"[u8; 20]\"\n", "field_named_bytes")

    def test_field_named_list(self):
        # Was a bug: `field(default_factory=list)` gets the earlier field `list` (0):
        # M() raises "TypeError: 'int' object is not callable".
        self.works_or_refused(
            "messages:\n  M:\n    tlv_type: 5\n    domain: T\n    fields:\n"
            "      list: u16\n      v: \"Vec<[u8; 32]>\"\n", "field_named_list")

    def test_message_names_with_the_same_constant(self):
        # Was a bug: FooBar and Foo_Bar both become HY_TYPE_FOO_BAR; the header
        # defines it twice (7u, then 8u): "HY_TYPE_FOO_BAR" redefined.
        self.works_or_refused(
            "messages:\n  FooBar:\n    tlv_type: 7\n    domain: T\n    fields:\n      a: u64\n"
            "  Foo_Bar:\n    tlv_type: 8\n    domain: T\n    fields:\n      a: u64\n", "same_constant")

    def test_message_named_message_error(self):
        # Was a bug: the dataclass MessageError replaces the exception class, so
        # every refusal raises "TypeError: exceptions must derive from
        # BaseException" instead.
        mod = self.works_or_refused(
            "messages:\n  MessageError:\n    tlv_type: 7\n    domain: T\n    fields:\n      a: u64\n"
            "  Other:\n    tlv_type: 8\n    domain: T\n    fields:\n      s: String\n", "message_error")
        if mod is not None:
            with self.assertRaises(ValueError):
                mod.Other(s="x" * 33).to_bytes()

    def test_message_named_like_a_keyword(self):
        # Was a bug: a message called `struct` is accepted; the header has
        # "typedef struct struct {" and the module's next struct.Struct(...)
        # finds the class: "AttributeError: type object 'struct' has no
        # attribute 'Struct'".
        self.works_or_refused(
            "messages:\n  struct:\n    tlv_type: 7\n    domain: T\n    fields:\n      a: u64\n"
            "  Other:\n    tlv_type: 8\n    domain: T\n    fields:\n      b: u64\n", "keyword")


if __name__ == "__main__":
    unittest.main()
