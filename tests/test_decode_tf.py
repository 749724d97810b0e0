"""The Rust decoder against TensorFlow itself: random Examples and feature specs must decode
exactly as `tf.io.parse_example` (+ `tf.io.decode_raw`) does, errors included."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pipemode import RecordDecodeError, decode_examples, encode_example
from pipemode.errors import PipeModeDatasetException

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

RAW_DTYPES = ["uint8", "int16", "float32", "float64"]
SHAPES = [[], [0], [1], [2], [2, 3]]


@st.composite
def feature_specs(draw: st.DrawFn) -> tuple[str, Any, str | None]:
    """(kind, tf.io.FixedLenFeature, decode_raw dtype or None)."""
    kind = draw(st.sampled_from(["int64", "float32", "string", "raw"]))
    shape = draw(st.sampled_from(SHAPES))
    n = int(np.prod(shape))
    default = None
    if draw(st.integers(0, 2)):
        # Mostly the right size; sometimes not, which both sides must refuse.
        size = n if draw(st.integers(0, 5)) else draw(st.integers(0, 3))
        if kind == "int64":
            default = np.arange(size, dtype=np.int64).reshape(shape if size == n else [size])
        elif kind == "float32":
            default = (np.arange(size, dtype=np.float32) / 2).reshape(
                shape if size == n else [size]
            )
        else:
            default = np.array([b"\x01\x00" * 4] * size, object)
            default = default.reshape(shape if size == n else [size]).tolist()
    dtype = {"int64": tf.int64, "float32": tf.float32}.get(kind, tf.string)
    raw = draw(st.sampled_from(RAW_DTYPES)) if kind == "raw" else None
    return kind, tf.io.FixedLenFeature(shape, dtype, default_value=default), raw


def feature_value(draw: st.DrawFn, kind: str, n: int) -> tf.train.Feature:
    """A Feature for a spec of `kind` with `n` values: mostly right, sometimes wrong."""
    choice = draw(st.sampled_from(["right"] * 14 + ["count", "kind", "unset"]))
    count = n if choice != "count" else draw(st.integers(0, 4).filter(lambda c: c != n))
    if choice == "unset":
        return tf.train.Feature()
    if choice == "kind":
        kind = draw(st.sampled_from([k for k in ["int64", "float32", "string"] if k != kind]))
    if kind == "int64":
        values = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=count, max_size=count))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if kind == "float32":
        values = draw(st.lists(st.floats(width=32), min_size=count, max_size=count))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    # Raw strings come in a few sizes, so a batch sometimes mixes them (an error in TF too).
    sizes = st.sampled_from([0, 4, 8, 8, 8, 16, 3]) if kind == "raw" else st.integers(0, 6)
    values = [
        draw(st.binary(min_size=s, max_size=s))
        for s in draw(st.lists(sizes, min_size=count, max_size=count))
    ]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[bytes], dict[str, Any], dict[str, str], dict[str, str]]:
    names = draw(
        st.lists(
            st.sampled_from(["a", "b", "label", "x/y", ""]), min_size=1, max_size=3, unique=True
        )
    )
    spec, raw, kinds = {}, {}, {}
    for name in names:
        kind, feature, raw_dtype = draw(feature_specs())
        spec[name], kinds[name] = feature, kind
        if raw_dtype:
            raw[name] = raw_dtype
    records = []
    for _ in range(draw(st.integers(1, 4))):
        features = {}
        for name in names:
            if draw(st.integers(0, 7)):  # sometimes missing
                n = int(np.prod(spec[name].shape))
                features[name] = feature_value(draw, kinds[name], n)
        if draw(st.booleans()):
            features["unrelated"] = tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
        example = tf.train.Example(features=tf.train.Features(feature=features))
        records.append(example.SerializeToString())
    return records, spec, raw, kinds


def parse_in_tf(
    records: list[bytes], spec: dict[str, Any], raw: dict[str, str]
) -> dict[str, np.ndarray]:
    parsed = tf.io.parse_example(tf.constant(records), spec)
    return {
        name: (tf.io.decode_raw(value, raw[name]) if name in raw else value).numpy()
        for name, value in parsed.items()
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_decoding_matches_parse_example(
    case: tuple[list[bytes], dict[str, Any], dict[str, str], dict[str, str]],
) -> None:
    records, spec, raw, _ = case
    try:
        expected = parse_in_tf(records, spec, raw)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
        event(f"TF refuses: {str(error).split('}}')[-1][:60]}")
        with pytest.raises((RecordDecodeError, PipeModeDatasetException)):
            decode_examples(records, spec, decode_raw=raw)
        return
    event("TF decodes")
    out = decode_examples(records, spec, decode_raw=raw)
    assert out.keys() == expected.keys()
    for name, want in expected.items():
        got = out[name]
        assert got.shape == want.shape, name
        if want.dtype == object:
            assert got.tolist() == want.tolist(), name
        else:
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want)


def test_tutorial_batch_matches_parse_example_and_decode_raw() -> None:
    rng = np.random.default_rng(0)
    records = [
        encode_example({"data": rng.normal(size=1024).tobytes(), "labels": [i % 2]})
        for i in range(64)
    ]
    spec = {
        "data": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenFeature([], tf.int64),
    }
    out = decode_examples(records, spec, decode_raw={"data": tf.float64})
    expected = parse_in_tf(records, spec, {"data": "float64"})
    np.testing.assert_array_equal(out["data"], expected["data"])
    np.testing.assert_array_equal(out["labels"], expected["labels"])
    # Parsed by TF's own proto library too: encode_example writes real Examples.
    example = tf.train.Example.FromString(records[3])
    assert example.features.feature["labels"].int64_list.value == [1]


@pytest.mark.parametrize(
    "feature",
    [
        lambda: tf.io.VarLenFeature(tf.int64),
        lambda: tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True),
        lambda: tf.io.RaggedFeature(tf.int64),
        lambda: tf.io.SparseFeature("i", "v", tf.float32, 4),
    ],
)
def test_feature_types_without_a_dense_column_are_rejected(feature: Any) -> None:
    instance = feature()
    with pytest.raises(
        PipeModeDatasetException, match=f"{type(instance).__name__} is not supported"
    ):
        decode_examples([b""], {"a": instance})


def test_tf_dtypes_outside_the_example_kinds_are_rejected() -> None:
    with pytest.raises(PipeModeDatasetException, match="is not supported"):
        decode_examples([b""], {"a": tf.io.FixedLenFeature([], tf.float64)})


# Wire-level Examples that protobuf serializers never write but readers meet: repeated names
# (the last wins), empty Features (absent), unpacked lists, unknown fields, several Features
# messages. TF's fast parser has its own rules for these; the decoder must follow them.


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


KIND_OF = {tf.float32: "float", tf.int64: "int", tf.string: "bytes"}


@st.composite
def wire_features(draw: st.DrawFn, dtype: Any, n: int) -> bytes:
    """A serialized Feature, mostly of the spec's kind and size, packed or not; or empty."""
    kind = (
        KIND_OF[dtype]
        if draw(st.integers(0, 4))
        else draw(st.sampled_from(["float", "int", "bytes"]))
    )
    count = n if draw(st.integers(0, 4)) else draw(st.integers(0, 3))
    unpacked = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        return b""
    if kind == "float":
        values = draw(st.lists(st.floats(width=32), min_size=count, max_size=count))
        packed = np.array(values, "<f4").tobytes()
        if not unpacked:
            return _field(2, _field(1, packed) if values else b"")
        return _field(2, b"".join(b"\x0d" + packed[i : i + 4] for i in range(0, len(packed), 4)))
    if kind == "int":
        values = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=count, max_size=count))
        varints = [_varint(v) for v in values]
        if not unpacked:
            return _field(3, _field(1, b"".join(varints)) if values else b"")
        return _field(3, b"".join(b"\x08" + v for v in varints))
    values = [draw(st.binary(max_size=8)) for _ in range(count)]
    return _field(1, b"".join(_field(1, v) for v in values))


@st.composite
def wire_examples(draw: st.DrawFn, dtypes: dict[str, Any], n: int) -> bytes:
    names = st.sampled_from(sorted(dtypes))
    entries = draw(st.lists(names, max_size=5))
    encoded = [
        _field(1, _field(1, name.encode()) + _field(2, draw(wire_features(dtypes[name], n))))
        for name in entries
    ]
    # Split the entries over one or more Features messages, maybe with an unknown field first.
    cut = draw(st.integers(0, len(encoded)))
    record = _field(1, b"".join(encoded[:cut])) + _field(1, b"".join(encoded[cut:]))
    if draw(st.booleans()):
        record = _varint(5 << 3) + _varint(draw(st.integers(0, 300))) + record
    return record


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "a": st.sampled_from([tf.float32, tf.int64]),
            "b": st.sampled_from([tf.float32, tf.int64, tf.string]),
            "c": st.sampled_from([tf.int64, tf.string]),
        }
    ),
    st.sampled_from([[], [1], [2]]),
    st.booleans(),
    st.data(),
)
def test_unusual_wire_encodings_decode_as_tf_reads_them(
    dtypes: dict[str, Any], shape: list[int], defaults: bool, data: st.DataObject
) -> None:
    n = int(np.prod(shape))
    records = data.draw(st.lists(wire_examples(dtypes, n), min_size=1, max_size=3))
    default = {tf.float32: [0.5] * n, tf.int64: [7] * n, tf.string: [b"d"] * n}
    spec = {
        name: tf.io.FixedLenFeature(shape, dtype, default[dtype] if defaults else None)
        for name, dtype in dtypes.items()
    }
    try:
        expected = parse_in_tf(records, spec, {})
    except tf.errors.InvalidArgumentError:
        event("TF refuses")
        with pytest.raises(RecordDecodeError):
            decode_examples(records, spec)
        return
    event("TF decodes")
    out = decode_examples(records, spec)
    for name, want in expected.items():
        assert out[name].shape == want.shape
        if want.dtype == object:
            assert out[name].tolist() == want.tolist()
        else:
            np.testing.assert_array_equal(out[name], want)
