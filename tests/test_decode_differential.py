"""Differential test of the Example decoder against TensorFlow, on valid and malformed bytes.

Examples are written byte by byte (so that encodings `SerializeToString` never makes can be
tried: unpacked lists, long-varint tags, duplicated features and map fields, unknown list kinds,
unknown Example fields), then sometimes mutated (truncated, bits flipped, bytes inserted or
dropped). For every batch, `pipemode.decode_examples` and `tf.io.parse_example` (+
`tf.io.decode_raw`) must agree: both return equal arrays, or both raise. The one exception is
where pipemode is deliberately stricter than TF (README, "Dense Examples without TensorFlow"):
pipemode may raise where TF returns data only for a record that holds one of those constructs.

The default run is short; for a long one:

    PIPEMODE_DIFFERENTIAL_EXAMPLES=10000 pytest tests/test_decode_differential.py \
        --hypothesis-show-statistics
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pipemode import RecordDecodeError, decode_examples
from pipemode.errors import PipeModeDatasetException

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

EXAMPLES = int(os.environ.get("PIPEMODE_DIFFERENTIAL_EXAMPLES", "200"))

NAMES = ["a", "b", "label", ""]
SHAPES = [[], [0], [1], [2], [2, 3]]
RAW_DTYPES = ["uint8", "int16", "float32", "float64"]
KINDS = ["int64", "float32", "string", "raw"]

# Tags as TF's fast parser knows them: one byte each.
FEATURES, KEY, VALUE = 0x0A, 0x0A, 0x12
BYTES_LIST, FLOAT_LIST, INT64_LIST = 0x0A, 0x12, 0x1A
PACKED, VARINT_VALUE, FIXED32_VALUE = 0x0A, 0x08, 0x0D


def varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def long_tag(tag: int) -> bytes:
    """`tag` as a two-byte varint: the same number, but not the byte TF compares with."""
    return bytes([tag | 0x80, 0x00])


def delimited(tag: bytes | int, payload: bytes) -> bytes:
    tag = bytes([tag]) if isinstance(tag, int) else tag
    return tag + varint(len(payload)) + payload


# --- Examples, byte by byte ------------------------------------------------------------------


def odd(draw: st.DrawFn, malice: int, one_in: int) -> bool:
    """Whether to make one part of a case wrong: never when the case's `malice` is 0, about
    once in `one_in` parts when it is 1, more often above."""
    return malice > 0 and draw(st.integers(0, max(one_in // malice - 1, 0))) == 0


def list_values(draw: st.DrawFn, kind: str, count: int) -> bytes:
    """The body of a value list of `kind` (its values, packed or not), without its tag."""
    if kind == "int64":
        values = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=count, max_size=count))
        if draw(st.booleans()):
            return b"".join(bytes([VARINT_VALUE]) + varint(v) for v in values)
        packed = b"".join(varint(v) for v in values)
        return delimited(PACKED, packed) if packed or draw(st.booleans()) else b""
    if kind == "float32":
        # Any bit pattern: NaN payloads and subnormals must come through as they are.
        bits = draw(st.lists(st.integers(0, 2**32 - 1), min_size=count, max_size=count))
        words = [struct.pack("<I", b) for b in bits]
        if draw(st.booleans()):
            return b"".join(bytes([FIXED32_VALUE]) + w for w in words)
        return delimited(PACKED, b"".join(words)) if words or draw(st.booleans()) else b""
    # Raw strings come in a few sizes, so a batch sometimes mixes them (an error in TF too).
    sizes = st.sampled_from([0, 4, 8, 8, 8, 16, 3]) if kind == "raw" else st.integers(0, 6)
    lengths = draw(st.lists(sizes, min_size=count, max_size=count))
    return b"".join(delimited(0x0A, draw(st.binary(min_size=s, max_size=s))) for s in lengths)


def feature_bytes(draw: st.DrawFn, malice: int, kind: str, n: int) -> bytes:
    """A serialized Feature for a spec of `kind` and `n` values: mostly right, sometimes not."""
    choice = "right"
    if odd(draw, malice, 8):
        choice = draw(st.sampled_from(["count", "kind", "unknown"]))
    elif draw(st.integers(0, 15)) == 0:
        choice = "unset"  # an empty Feature: valid, and TF takes the feature as missing
    if choice == "unset":
        return b""
    if choice == "unknown":
        # A Feature whose first byte is no list kind TF knows: another field, wire type, or
        # a list tag written as a longer varint.
        first = draw(st.sampled_from([0x22, 0x2A, 0x08, 0x0D, 0x0B, 0x8A, 0x92, 0x9A, 0x00]))
        return bytes([first]) + draw(st.binary(max_size=6))
    count = n if choice != "count" else draw(st.integers(0, 3).map(lambda c: c + (c >= n)))
    if choice == "kind":
        kind = draw(st.sampled_from([k for k in ["int64", "float32", "string"] if k != kind]))
    list_tag = {"int64": INT64_LIST, "float32": FLOAT_LIST}.get(kind, BYTES_LIST)
    return delimited(list_tag, list_values(draw, kind, count))


def map_entry(draw: st.DrawFn, malice: int, name: bytes, feature: bytes) -> bytes:
    """A Features map entry: key and value, in either order, tags sometimes as long varints."""
    key_tag = long_tag(KEY) if odd(draw, malice, 20) else bytes([KEY])
    value_tag = long_tag(VALUE) if odd(draw, malice, 20) else bytes([VALUE])
    fields = [delimited(key_tag, name), delimited(value_tag, feature)]
    if odd(draw, malice, 40):
        # A key or value twice: of two fields, stricter than TF (documented); of three, not.
        twice = draw(st.sampled_from(fields))
        fields = [twice, twice] if draw(st.booleans()) else [*fields, twice]
    if draw(st.integers(0, 4)) == 0:
        fields.reverse()
    return b"".join(fields)


def unknown_example_field(draw: st.DrawFn, malice: int) -> bytes:
    # Field number 0 is stricter than TF, documented.
    field = 0 if odd(draw, malice, 10) else draw(st.integers(2, 20))
    kind = draw(st.sampled_from(["varint", "fixed64", "delimited", "fixed32"]))
    if kind == "varint":
        return varint(field << 3) + varint(draw(st.integers(0, 2**64 - 1)))
    if kind == "fixed64":
        return varint(field << 3 | 1) + draw(st.binary(min_size=8, max_size=8))
    if kind == "fixed32":
        return varint(field << 3 | 5) + draw(st.binary(min_size=4, max_size=4))
    return delimited(varint(field << 3 | 2), draw(st.binary(max_size=8)))


def example_bytes(draw: st.DrawFn, malice: int, entries: list[bytes]) -> bytes:
    """An Example holding `entries`, split over one or more `features` fields, among unknown
    fields, with a tag sometimes written as a long varint (TF: another field)."""
    parts = []
    while entries:
        take = draw(st.integers(1, len(entries)))
        chunk, entries = entries[:take], entries[take:]
        entry_tag = long_tag(FEATURES) if odd(draw, malice, 40) else bytes([FEATURES])
        body = b"".join(delimited(entry_tag, entry) for entry in chunk)
        features_tag = long_tag(FEATURES) if odd(draw, malice, 15) else bytes([FEATURES])
        parts.append(delimited(features_tag, body))
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):
        parts.insert(draw(st.integers(0, len(parts))), unknown_example_field(draw, malice))
    return b"".join(parts)


def mutated(draw: st.DrawFn, record: bytes) -> bytes:
    data = bytearray(record)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["truncate", "flip", "set", "insert", "drop", "repeat"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = bytes([draw(st.integers(0, 255))])
        elif action == "repeat":
            end = draw(st.integers(at, len(data)))
            data[end:end] = data[at:end]
        elif data and action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif data and action == "set":
            data[at] = draw(st.integers(0, 255))
        elif data:
            del data[at]
    return bytes(data)


@st.composite
def feature_specs(draw: st.DrawFn) -> tuple[str, Any, str | None]:
    """(kind, tf.io.FixedLenFeature, decode_raw dtype or None)."""
    kind = draw(st.sampled_from(KINDS))
    shape = draw(st.sampled_from(SHAPES))
    n = int(np.prod(shape))
    default = None
    if draw(st.integers(0, 2)):
        # Mostly the right size; sometimes not, which both sides must refuse.
        size = n if draw(st.integers(0, 7)) else draw(st.integers(0, 3))
        dims = shape if size == n else [size]
        if kind == "int64":
            default = np.arange(size, dtype=np.int64).reshape(dims) - 3
        elif kind == "float32":
            default = (np.arange(size, dtype=np.float32) / 2).reshape(dims)
        else:
            default = np.array([b"\x01\x00" * 4] * size, object).reshape(dims).tolist()
    dtype = {"int64": tf.int64, "float32": tf.float32}.get(kind, tf.string)
    raw = draw(st.sampled_from(RAW_DTYPES)) if kind == "raw" else None
    return kind, tf.io.FixedLenFeature(shape, dtype, default_value=default), raw


Case = tuple[list[bytes], dict[str, Any], dict[str, str]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    spec, raw, kinds = {}, {}, {}
    for name in names:
        kinds[name], spec[name], raw_dtype = draw(feature_specs())
        if raw_dtype:
            raw[name] = raw_dtype
    # Half the cases are valid Examples (in any valid encoding), half are not, more or less.
    malice = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    records = []
    for _ in range(draw(st.integers(1, 4))):
        entries = []
        for name in [*names, "unrelated"]:
            kind = kinds.get(name, "float32")
            n = int(np.prod(spec[name].shape)) if name in spec else 1
            # Mostly once; sometimes missing, sometimes several times (the last one wins).
            for _ in range(draw(st.sampled_from([1] * 6 + [0, 2, 3]))):
                feature = feature_bytes(draw, malice, kind, n)
                entries.append(map_entry(draw, malice, name.encode(), feature))
        entries = draw(st.permutations(entries)) if draw(st.integers(0, 3)) == 0 else entries
        record = example_bytes(draw, malice, entries)
        if odd(draw, malice, 6):
            record = mutated(draw, record)
        records.append(record)
    return records, spec, raw


# --- Where pipemode is stricter than TF, by design ---------------------------------------------

REPEATED_MAP_FIELD = "a map entry of two keys or two values"
FIELD_ZERO = "field number 0"
PAST_THE_END = "a length runs past the end of its message"
# How pipemode's RecordDecodeError words each class.
STRICTER_MESSAGES = {
    REPEATED_MAP_FIELD: ("repeats its key or value",),
    FIELD_ZERO: ("field number 0",),
    PAST_THE_END: ("a length runs past the end", "does not parse"),
}
U32 = 2**32 - 1


class _Stop(Exception):
    """The walk cannot go on: TF's parser refuses the record too."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i, byte in enumerate(data[pos : pos + 10]):
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value & (2**64 - 1), pos + i + 1
    raise _Stop


def _clipped(data: bytes, pos: int, found: set[str]) -> tuple[bytes, int]:
    """A length-delimited payload as TF's `PushLimit` and `Skip` take it: cut at the end."""
    length, pos = _varint(data, pos)
    if pos + (length & U32) > len(data):
        found.add(PAST_THE_END)
    end = min(pos + (length & U32), len(data))
    return data[pos:end], end


def _entry(entry: bytes, found: set[str]) -> tuple[bytes, bytes]:
    """A map entry as TF reads it: two fields, key or value each, and nothing after."""
    fields = {KEY: b"", VALUE: b""}
    kinds = []
    pos = 0
    for _ in range(2):
        if pos == len(entry):
            raise _Stop
        tag, pos = _varint(entry, pos)
        length, pos = _varint(entry, pos)
        if tag & U32 not in fields or pos + (length & U32) > len(entry):
            raise _Stop
        fields[tag & U32] = entry[pos : pos + (length & U32)]
        kinds.append(tag & U32)
        pos += length & U32
    if pos != len(entry):
        raise _Stop
    if kinds[0] == kinds[1]:
        found.add(REPEATED_MAP_FIELD)
    return fields[KEY], fields[VALUE]


def _entries(record: bytes, found: set[str]) -> list[tuple[bytes, bytes]]:
    """The Example's map entries, walked as TF's fast parser walks them, noting on the way the
    classes that pipemode refuses."""
    entries = []
    pos = 0
    while pos < len(record):
        if record[pos] == FEATURES:
            body, pos = _clipped(record, pos + 1, found)
            at = 0
            while at < len(body):
                if body[at] != FEATURES:
                    raise _Stop
                entry, at = _clipped(body, at + 1, found)
                entries.append(_entry(entry, found))
            continue
        tag, pos = _varint(record, pos)
        if tag & U32 < 8:
            found.add(FIELD_ZERO)
        wire_type = tag & 7
        if wire_type == 0:
            pos = _varint(record, pos)[1]
        elif wire_type == 2:
            pos = _clipped(record, pos, found)[1]
        elif wire_type in (1, 5) and pos + (8 if wire_type == 1 else 4) <= len(record):
            pos += 8 if wire_type == 1 else 4
        else:
            raise _Stop
    return entries


def _list_body(feature: bytes) -> bytes:
    """A Feature's value list, after its kind byte, cut at the Feature's end as TF cuts it."""
    length, pos = _varint(feature, 1)
    return feature[pos : pos + (length & U32)]


def _packed_run_past_the_end(feature: bytes) -> bool:
    """A numeric list whose packed run claims more bytes than its Feature holds: TF reads the
    int64 run up to the end, and of a float run only the bytes its values need."""
    if feature[:1] not in (bytes([FLOAT_LIST]), bytes([INT64_LIST])):
        return False
    body = _list_body(feature)
    if body[:1] != bytes([PACKED]):
        return False
    packed, at = _varint(body, 1)
    return at + (packed & U32) > len(body)


def winning_features(record: bytes, names: set[str]) -> tuple[dict[str, bytes], set[str]]:
    """For each wanted name the Feature TF takes (the last non-empty one), and the classes of
    input found that pipemode refuses and TF takes; no features if TF refuses the record."""
    found: set[str] = set()
    try:
        entries = _entries(record, found)
    except _Stop:
        return {}, found
    winners = {}
    for key, feature in entries:
        name = key.decode("utf-8", "replace")
        if name in names and feature:
            winners[name] = feature
    for feature in winners.values():
        try:
            if _packed_run_past_the_end(feature):
                found.add(PAST_THE_END)
        except _Stop:
            pass
    return winners, found


def stricter_than_tf(record: bytes, names: set[str]) -> set[str]:
    """The documented classes of input that pipemode refuses and TF takes, found in `record`."""
    return winning_features(record, names)[1]


def tf_writes_out_of_bounds(records: list[bytes], spec: dict[str, Any]) -> bool:
    """Whether TF would write past its output tensor. TF sizes an unpacked float list from its
    byte length (5 bytes a value) and writes every value it reads, even beyond the feature's
    shape (`ParseFloatList` into a `LimitedArraySlice`): that corrupts its heap, so such
    batches are not given to TF. TF reports a count error for them after the write."""
    floats = {name for name, f in spec.items() if f.dtype == tf.float32}
    for record in records:
        winners, _ = winning_features(record, floats)
        for name, feature in winners.items():
            try:
                body = _list_body(feature)
            except _Stop:
                continue
            slots = int(np.prod(spec[name].shape))
            unpacked = feature[0] == FLOAT_LIST and body[:1] == bytes([FIXED32_VALUE])
            if unpacked and len(body) // 5 > slots:
                return True
    return False


# --- The comparison ---------------------------------------------------------------------------


def parse_in_tf(records: list[bytes], spec: dict[str, Any], raw: dict[str, str]) -> dict[str, Any]:
    parsed = tf.io.parse_example(tf.constant(records), spec)
    return {
        name: (tf.io.decode_raw(value, raw[name]) if name in raw else value).numpy()
        for name, value in parsed.items()
    }


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape, name
        if expected.dtype == object:
            assert actual.tolist() == expected.tolist(), name
            continue
        assert actual.dtype == expected.dtype, name
        # Bit for bit, so NaN payloads and signed zeros count too.
        width = f"u{expected.dtype.itemsize}"
        np.testing.assert_array_equal(actual.view(width), expected.view(width), name)


def assert_documented_strictness(
    error: RecordDecodeError, records: list[bytes], spec: dict[str, Any]
) -> None:
    assert error.record is not None, error
    classes = stricter_than_tf(records[error.record], set(spec))
    assert classes, f"pipemode refuses record {error.record}, TF takes it: {error}"
    wordings = [w for c in classes for w in STRICTER_MESSAGES[c]]
    assert any(w in str(error) for w in wordings), (classes, str(error))
    for stricter in classes:
        event(f"pipemode stricter: {stricter}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_decoder_agrees_with_parse_example_on_valid_and_malformed_examples(case: Case) -> None:
    records, spec, raw = case
    if tf_writes_out_of_bounds(records, spec):
        event("TF would write out of bounds: pipemode must refuse")
        # Or refuse the spec: spec checks are compared with TF's in the other cases.
        with pytest.raises((RecordDecodeError, PipeModeDatasetException)):
            decode_examples(records, spec, decode_raw=raw)
        return
    try:
        expected = parse_in_tf(records, spec, raw)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
        event(f"both refuse: {type(error).__name__}")
        with pytest.raises((RecordDecodeError, PipeModeDatasetException)):
            decode_examples(records, spec, decode_raw=raw)
        return
    try:
        got = decode_examples(records, spec, decode_raw=raw)
    except RecordDecodeError as error:
        assert_documented_strictness(error, records, spec)
        return
    event("both decode")
    assert_same_arrays(got, expected)


# --- The classifier itself, on the cases it must and must not accept ----------------------


def test_the_stricter_classes_are_found_and_nothing_else() -> None:
    int64_5 = delimited(INT64_LIST, delimited(PACKED, varint(5)))
    entry = delimited(KEY, b"a") + delimited(VALUE, int64_5)

    def example(*entries: bytes) -> bytes:
        return delimited(FEATURES, b"".join(delimited(FEATURES, e) for e in entries))

    canonical = example(entry)
    assert stricter_than_tf(canonical, {"a"}) == set()
    clipped_run = delimited(INT64_LIST, bytes([PACKED, 3]) + varint(5))
    stricter = {
        example(delimited(KEY, b"a") + delimited(KEY, b"a")): REPEATED_MAP_FIELD,
        example(delimited(VALUE, int64_5) * 2): REPEATED_MAP_FIELD,
        b"\x00\x05" + canonical: FIELD_ZERO,
        canonical + b"\x1a\x05xx": PAST_THE_END,
        example(delimited(KEY, b"a") + delimited(VALUE, clipped_run)): PAST_THE_END,
    }
    # Each is taken by TF and refused by pipemode, in the words the differential test expects.
    spec = {
        "a": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }
    for record, expected in stricter.items():
        assert stricter_than_tf(record, set(spec)) == {expected}, record
        parse_in_tf([record], spec, {})
        with pytest.raises(RecordDecodeError) as refused:
            decode_examples([record], spec)
        assert any(w in str(refused.value) for w in STRICTER_MESSAGES[expected])
    clipped = example(delimited(KEY, b"a") + delimited(VALUE, clipped_run))
    assert stricter_than_tf(clipped, {"b"}) == set(), "only features the spec names count"
    # Malformed for TF too: not a class of its own.
    assert stricter_than_tf(example(entry + delimited(KEY, b"a")), {"a"}) == set()
    assert stricter_than_tf(bytes([FEATURES]) + b"\x02\x12\x00", {"a"}) == set()
    assert stricter_than_tf(long_tag(FEATURES) + canonical[1:], {"a"}) == set()


def test_batches_that_would_make_tf_write_out_of_bounds_are_recognised() -> None:
    spec = {"f": tf.io.FixedLenFeature([1], tf.float32)}
    unpacked = b"".join(bytes([FIXED32_VALUE]) + struct.pack("<f", v) for v in (1.0, 2.0))
    entry = delimited(KEY, b"f") + delimited(VALUE, delimited(FLOAT_LIST, unpacked))
    two_floats = delimited(FEATURES, delimited(FEATURES, entry))
    assert tf_writes_out_of_bounds([two_floats], spec)
    assert not tf_writes_out_of_bounds([two_floats], {"f": tf.io.FixedLenFeature([2], tf.float32)})
    with pytest.raises(RecordDecodeError, match="expected 1 float values"):
        decode_examples([two_floats], spec)
