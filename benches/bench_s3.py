"""S3 channels: the runner's epoch time through a proxy that adds latency, against boto3 itself.

A moto S3 server and the test suite's proxy (tests/s3_proxy.py, a delay before every request)
each run in a process of their own; the runner, the training script and the boto3 baselines
read through the proxy. Two channels:

1. many small objects (1,000 of 8 KB): sequential `get_object` calls, 16 concurrent ones (a
   thread pool), the runner's FIFO, and the runner feeding the same files from a local folder;
2. one large object (1 GB by default, `--big-megabytes`): one `get_object` read to its end,
   the runner's FIFO (concurrent ranged GETs), and the local-file feeder.

The runner's epochs are timed by the script, from the FIFO's open to its end; epoch 0 includes
the listing, epoch 1 does not. Baselines are given the keys (no listing).

    python benches/bench_s3.py [--objects 1000] [--object-kb 8] [--latency-ms 20]
                               [--big-megabytes 1000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from pipemode.runner import Channel, TrainingJob
from pipemode.runner.sources import s3_client

_PROXY = Path(__file__).resolve().parent.parent / "tests" / "s3_proxy.py"

_SCRIPT = """
import json, os, sys, time
data = os.path.join(os.environ["SM_INPUT_DIR"], "data")
def timed(path):
    while not os.path.exists(path):
        time.sleep(0.001)
    buffer = bytearray(1 << 20)
    total = 0
    with open(path, "rb", buffering=0) as f:
        started = time.perf_counter()
        while n := f.readinto(buffer):
            total += n
    return total, time.perf_counter() - started
runs = [timed(os.path.join(data, f"train_{epoch}")) for epoch in range(2)]
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "runs.json"), "w") as f:
    json.dump(runs, f)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# moto reads an object's whole value (and copies it) for every GET, ranged or not, under the
# key's lock: a ranged GET of 8 MiB of a 1 GB object would cost 1 GB. S3 costs the range. The
# bench's server keeps each object's bytes once read, so that a ranged GET costs its slice.
_MOTO = """
import sys
from moto.s3 import models
from moto.server import main
plain = models.FakeKey.value
def cached(self):
    if "_bench_value" not in self.__dict__:
        self.__dict__["_bench_value"] = plain.fget(self)
    return self.__dict__["_bench_value"]
def store(self, value):
    self.__dict__.pop("_bench_value", None)
    plain.fset(self, value)
models.FakeKey.value = property(cached, store)
main(sys.argv[1:])
"""


@contextlib.contextmanager
def moto_and_proxy(latency: float, bandwidth: float) -> Iterator[tuple[str, str]]:
    """(server, proxy) endpoints, each served by a process of its own."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _MOTO, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    proxy = subprocess.Popen(
        [sys.executable, str(_PROXY), endpoint, str(latency), str(bandwidth)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        proxied = proxy.stdout.readline().strip()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            time.sleep(0.1)
        yield endpoint, proxied
    finally:
        for process in (proxy, server):
            process.terminate()
            process.wait(10)


def client(endpoint: str) -> Any:
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=32))


def sequential_gets(s3: Any, bucket: str, keys: list[str]) -> float:
    started = time.perf_counter()
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        while body.read(1 << 20):
            pass
    return time.perf_counter() - started


def concurrent_gets(s3: Any, bucket: str, keys: list[str], threads: int = 16) -> float:
    def get(key: str) -> int:
        return len(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(get, keys))
    assert total > 0
    return time.perf_counter() - started


def runner_epochs(folder: Path, source: str, name: str) -> list[float]:
    script = folder / "read.py"
    script.write_text(_SCRIPT)
    job = TrainingJob(
        script, [Channel("train", source)], output_path=folder / "jobs", job_name=name
    )
    result = job.run(stderr=io.StringIO(), live=False)
    assert result.exit_code == 0, result.failure
    runs = json.loads((result.hosts[0].output_data_dir / "runs.json").read_text())
    return [seconds for _, seconds in runs]


def bench_channel(
    label: str, folder: Path, keys: dict[str, bytes], endpoints: tuple[str, str], bucket: str
) -> list[str]:
    server, proxied = endpoints
    direct = client(server)
    direct.create_bucket(Bucket=bucket)
    for key, body in keys.items():
        direct.put_object(Bucket=bucket, Key=key, Body=body)
    local = folder / bucket
    for key, body in keys.items():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(body)
    names = sorted(keys)
    through_proxy = client(proxied)
    sequential = sequential_gets(through_proxy, bucket, names)
    parallel = concurrent_gets(through_proxy, bucket, names) if len(names) > 1 else None
    os.environ["AWS_ENDPOINT_URL"] = proxied
    s3_client.cache_clear()
    s3_epochs = runner_epochs(folder, f"s3://{bucket}/", f"{bucket}-s3")
    local_epochs = runner_epochs(folder, str(local), f"{bucket}-local")
    megabytes = sum(map(len, keys.values())) / 1e6
    best = min(s3_epochs)
    rows = [
        f"| {label} | `get_object` one after another | {sequential:.2f} | "
        f"{megabytes / sequential:,.1f} | {sequential / best:.2f} |"
    ]
    if parallel is not None:
        rows.append(
            f"| {label} | 16 concurrent `get_object` | {parallel:.2f} | "
            f"{megabytes / parallel:,.1f} | {parallel / best:.2f} |"
        )
    rows.append(
        f"| {label} | pipemode runner, S3 (epoch 0 / 1) | {s3_epochs[0]:.2f} / "
        f"{s3_epochs[1]:.2f} | {megabytes / best:,.1f} | 1.00 |"
    )
    rows.append(
        f"| {label} | pipemode runner, local files | {min(local_epochs):.3f} | "
        f"{megabytes / min(local_epochs):,.0f} | {min(local_epochs) / best:.3f} |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--object-kb", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--big-megabytes", type=int, default=1000)
    parser.add_argument(
        "--connection-mbps", type=float, default=0, help="cap per response (0: none)"
    )
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[name] = value
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    small = {f"small/{i:05d}": os.urandom(args.object_kb * 1000) for i in range(args.objects)}
    big = {"big/object": os.urandom(1 << 20) * args.big_megabytes}
    rows = [
        "| channel | reader | seconds | MB/s | its time / the runner's (S3) |",
        "|---|---|---:|---:|---:|",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="pipemode-bench-") as scratch,
        moto_and_proxy(args.latency_ms / 1000, args.connection_mbps * 1e6) as endpoints,
    ):
        folder = Path(scratch)
        label = f"{args.objects:,} x {args.object_kb} KB"
        rows += bench_channel(label, folder, small, endpoints, "small")
        del small
        rows += bench_channel(f"1 x {args.big_megabytes} MB", folder, big, endpoints, "big")
    cap = f", at most {args.connection_mbps:g} MB/s per response" if args.connection_mbps else ""
    print(f"\nThrough a proxy adding {args.latency_ms:g} ms per request{cap}:\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
