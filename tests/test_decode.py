"""The Example decoder without TensorFlow: round trips, alignment, errors, spec checks."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pipemode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipemode import (
    FixedLenFeature,
    RecordDecodeError,
    RecordReader,
    RecordWriter,
    decode_examples,
    encode_example,
)
from pipemode.errors import PipeModeDatasetException

TUTORIAL_SPEC = {
    "data": FixedLenFeature([], "string"),
    "labels": FixedLenFeature([], "int64"),
}


def tutorial_data(i: int) -> np.ndarray:
    return np.random.default_rng(i).normal(i % 2 - 1, 1, 1024)


def tutorial_record(i: int) -> bytes:
    return encode_example({"data": tutorial_data(i).tobytes(), "labels": [i % 2]})


def test_tutorial_records_decode_to_aligned_columns() -> None:
    records = [tutorial_record(i) for i in range(10)]
    assert len(records[0]) == 8230
    out = decode_examples(records, TUTORIAL_SPEC, decode_raw={"data": np.float64})
    assert out["data"].dtype == np.float64 and out["data"].shape == (10, 1024)
    assert out["labels"].dtype == np.int64 and out["labels"].tolist() == [i % 2 for i in range(10)]
    np.testing.assert_array_equal(out["data"][3], tutorial_data(3))
    for column in out.values():
        assert column.ctypes.data % 64 == 0, "TF copies arrays that are not 64-byte aligned"
        assert column.flags.c_contiguous and column.flags.writeable


def test_the_arrays_own_their_buffers() -> None:
    out = decode_examples([tutorial_record(0)], TUTORIAL_SPEC, decode_raw={"data": "float64"})
    data = out.pop("data")
    del out
    gc.collect()
    # Had the Rust buffer gone with the dict, the next decodes (of other values, into buffers of
    # the same size) would reuse it and change `data` under us.
    for i in range(1, 10):
        decode_examples([tutorial_record(i)], TUTORIAL_SPEC, decode_raw={"data": "float64"})
    assert data.base is not None
    np.testing.assert_array_equal(data[0], tutorial_data(0))


def test_strings_stay_bytes_in_object_arrays() -> None:
    record = encode_example({"s": [b"a\x00", b""], "t": "caf\u00e9"})
    out = decode_examples(
        [record],
        {"s": FixedLenFeature([2], "string"), "t": FixedLenFeature([], "string")},
    )
    assert out["s"].dtype == object and out["s"].tolist() == [[b"a\x00", b""]]
    assert out["t"].tolist() == ["café".encode()]


def test_defaults_fill_missing_features_with_the_feature_shape() -> None:
    spec = {
        "x": FixedLenFeature([2, 2], np.int64, default_value=[[1, 2], [3, 4]]),
        "y": FixedLenFeature([], np.float32, default_value=0.5),
        "z": FixedLenFeature([1], "string", default_value=[b"none"]),
    }
    out = decode_examples([encode_example({}), b""], spec)
    assert out["x"].shape == (2, 2, 2) and out["x"][1].tolist() == [[1, 2], [3, 4]]
    assert out["y"].tolist() == [0.5, 0.5]
    assert out["z"].tolist() == [[b"none"], [b"none"]]


def test_errors_name_the_record_the_feature_and_what_was_found() -> None:
    good = encode_example({"v": [1.0, 2.0]})
    bad = encode_example({"v": [1.0, 2.0, 3.0]})
    with pytest.raises(RecordDecodeError) as caught:
        decode_examples([good, good, bad], {"v": FixedLenFeature([2], "float32")})
    assert caught.value.record == 2
    assert str(caught.value) == (
        "record 2: feature 'v' (float) expected 2 float values for shape [2], found 3"
    )
    assert isinstance(caught.value, ValueError)

    with pytest.raises(RecordDecodeError, match=r"record 0: feature 'w' \(int64\) is required"):
        decode_examples([good], {"w": FixedLenFeature([], "int64")})
    with pytest.raises(RecordDecodeError, match="expected an int64_list, found a float_list"):
        decode_examples([good], {"v": FixedLenFeature([2], "int64")})
    with pytest.raises(RecordDecodeError, match=r"record 1: not a valid tf\.train\.Example"):
        decode_examples([good, b"\xff"], {"v": FixedLenFeature([2], "float32")})


def test_decode_raw_strings_must_agree_in_size() -> None:
    spec = {"r": FixedLenFeature([], "string")}
    records = [encode_example({"r": b"\x01\x00\x02\x00"}), encode_example({"r": b"\x01\x00"})]
    with pytest.raises(RecordDecodeError, match=r"record 1: .*expected 4 bytes.*found 2"):
        decode_examples(records, spec, decode_raw={"r": "int16"})
    with pytest.raises(RecordDecodeError, match="whole number of 4-byte items"):
        decode_examples([encode_example({"r": b"12345"})], spec, {"r": "<f4"})
    out = decode_examples(records[:1], spec, decode_raw={"r": np.uint16})
    assert out["r"].tolist() == [[1, 2]] and out["r"].dtype == np.uint16


class VarLenFeature:  # named like TF's, as users pass it
    dtype = "int64"


@pytest.mark.parametrize(
    ("features", "decode_raw", "message"),
    [
        ({"a": VarLenFeature()}, None, "VarLenFeature is not supported: pipemode decodes"),
        ({"a": FixedLenFeature([], "float64")}, None, "dtype 'float64' is not supported"),
        ({"a": FixedLenFeature([None], "int64")}, None, "must be fully known"),
        ({"a": FixedLenFeature([3], "int64", [1])}, None, "default_value of 1 values"),
        ({"a": FixedLenFeature([], "int64", 1.5)}, None, "does not convert to int64"),
        ({"a": FixedLenFeature([], "int64")}, {"a": "float64"}, "only string features"),
        ({"a": FixedLenFeature([], "string")}, {"b": "float64"}, "not in features"),
        ({"a": FixedLenFeature([], "string")}, {"a": "complex64"}, "not an integer or float"),
        ({}, None, "non-empty dict"),
    ],
)
def test_unsupported_specs_are_rejected_before_reading(
    features: dict[str, Any], decode_raw: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(PipeModeDatasetException, match=message):
        decode_examples([b""], features, decode_raw)


def test_a_spec_is_checked_once_and_reused() -> None:
    spec = pipemode.decode.example_spec(TUTORIAL_SPEC, {"data": "float64"})
    assert spec.names == ["data", "labels"]
    out = decode_examples([tutorial_record(1)], spec)
    assert out["data"].shape == (1, 1024)


def test_decoding_from_threads_gives_the_same_columns() -> None:
    # The GIL is released while decoding: threads must not disturb each other's columns.
    records = [tutorial_record(i) for i in range(64)]
    spec = pipemode.decode.example_spec(TUTORIAL_SPEC, {"data": "float64"})
    expected = decode_examples(records, spec)
    results: list[dict[str, np.ndarray]] = []

    def work() -> None:
        for _ in range(20):
            results.append(decode_examples(records, spec))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    for result in results:
        np.testing.assert_array_equal(result["data"], expected["data"])
        np.testing.assert_array_equal(result["labels"], expected["labels"])


def test_encode_example_refuses_what_has_no_example_type() -> None:
    with pytest.raises(TypeError, match="empty list has no type"):
        encode_example({"a": []})
    with pytest.raises(TypeError, match="mixing bytes and numbers"):
        encode_example({"a": [b"x", 1]})
    assert decode_examples(
        [encode_example({"a": np.array([], np.float32)})], {"a": FixedLenFeature([0], "float32")}
    )["a"].shape == (1, 0)


# Hypothesis: any Example encode_example writes decodes back to its values.
names = st.text("abcxyz_/", min_size=0, max_size=6)
shapes = st.lists(st.integers(0, 3), max_size=2)


@st.composite
def examples_and_spec(draw: st.DrawFn) -> tuple[list[bytes], dict[str, Any], dict[str, Any]]:
    rows = draw(st.integers(1, 4))
    columns: dict[str, Any] = {}
    for name in draw(st.lists(names, min_size=1, max_size=4, unique=True)):
        shape = draw(shapes)
        n = int(np.prod(shape))
        kind = draw(st.sampled_from(["int64", "float32", "string", "raw"]))
        if kind == "int64":
            values = draw(
                st.lists(
                    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n),
                    min_size=rows,
                    max_size=rows,
                )
            )
            columns[name] = (shape, kind, np.array(values, np.int64).reshape(rows, *shape))
        elif kind == "float32":
            floats = st.floats(width=32, allow_nan=False)
            values = draw(
                st.lists(st.lists(floats, min_size=n, max_size=n), min_size=rows, max_size=rows)
            )
            columns[name] = (shape, kind, np.array(values, np.float32).reshape(rows, *shape))
        elif kind == "string":
            strings = st.lists(
                st.lists(st.binary(max_size=5), min_size=n, max_size=n),
                min_size=rows,
                max_size=rows,
            )
            values = draw(strings)
            array = np.empty((rows, n), object)
            array[:] = values
            columns[name] = (shape, kind, array.reshape(rows, *shape))
        else:
            width = draw(st.integers(0, 3)) if n else 0  # no string, no width: TF says 0
            raw = draw(st.binary(min_size=rows * n * width * 8, max_size=rows * n * width * 8))
            columns[name] = (shape, kind, np.frombuffer(raw, "<f8").reshape(rows, *shape, width))
    records = []
    for row in range(rows):
        entry: dict[str, Any] = {}
        for name, (_shape, kind, array) in columns.items():
            value = array[row]
            if kind == "raw":
                items = [value[i].tobytes() for i in np.ndindex(value.shape[:-1])]
                entry[name] = np.array(items, object)
            elif kind == "string":
                entry[name] = np.asarray(value, dtype=object).ravel()
            else:
                entry[name] = value.ravel()
        records.append(encode_example(entry))
    spec = {
        name: FixedLenFeature(shape, "string" if kind == "raw" else kind)
        for name, (shape, kind, _) in columns.items()
    }
    decode_raw = {name: "float64" for name, (_, kind, _) in columns.items() if kind == "raw"}
    expected = {name: array for name, (_, _, array) in columns.items()}
    return records, {"spec": spec, "decode_raw": decode_raw}, expected


@settings(max_examples=150, deadline=None)
@given(examples_and_spec())
def test_encoded_examples_round_trip(case: tuple[list[bytes], dict[str, Any], Any]) -> None:
    records, options, expected = case
    out = decode_examples(records, options["spec"], options["decode_raw"])
    assert out.keys() == expected.keys()
    for name, array in expected.items():
        assert out[name].shape == array.shape
        np.testing.assert_array_equal(out[name], array)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
def test_arbitrary_bytes_decode_or_raise_a_decode_error(records: list[bytes]) -> None:
    spec = {
        "a": FixedLenFeature([1], "int64", default_value=[0]),
        "": FixedLenFeature([], "float32", default_value=1.0),
        "s": FixedLenFeature([], "string", default_value=b""),
    }
    try:
        out = decode_examples(records, spec)
    except RecordDecodeError as error:
        assert error.record is not None and 0 <= error.record < len(records)
    else:
        assert all(len(column) == len(records) for column in out.values())


def test_a_record_batch_decodes_from_its_buffer_without_bytes_objects(tmp_path: Path) -> None:
    records = [tutorial_record(i) for i in range(100)]
    with RecordWriter(tmp_path / "data", "TFRecord") as writer:
        for record in records:
            writer.write(record)
    (batch,) = RecordReader(tmp_path / "data", "TFRecord").batches(1000)
    spec = pipemode.decode.example_spec(TUTORIAL_SPEC, {"data": "float64"})
    # tracemalloc sees every Python object allocated, so a `bytes` per record (823 KB in all)
    # would show in the peak; the columns are Rust's buffers, which it does not see.
    tracemalloc.start()
    try:
        out = decode_examples(batch, spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < batch.nbytes // 20, f"{peak} bytes of Python objects for {batch.nbytes}"
    expected = decode_examples(records, spec)
    np.testing.assert_array_equal(out["data"], expected["data"])
    np.testing.assert_array_equal(out["labels"], expected["labels"])
