"""Reading S3 objects as SageMaker's agent serves them: resumed when cut, fetched ahead, in order.

Two things live here. `S3Reader` is one object's bytes as a stream that survives a cut
connection: a body that ends short, or fails mid-way, is resumed with a ranged GET from the byte
reached, a bounded number of times with backoff, and an object that still cannot be read raises
`ObjectReadError` naming its URI and that byte. Every GET of one object, a resumption or another
part, carries If-Match on one ETag (the listing's, or the first response's), so an object
rewritten during the job fails the read instead of being spliced from two versions.
`fetch_ahead` streams a run of objects in order while a thread pool fetches the next ones (and
the parts of a large one) concurrently, holding at most `max_bytes_in_flight` bytes that the FIFO
has not taken yet.

boto3 does the HTTP and its Config sets the timeouts; the reader retries its own GETs (a failure
before the body and one within it alike), so only the ordering, the resumption and its retries
are written here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import io
import itertools
import os
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from pipemode.errors import JobConfigError

__all__ = ["ObjectReadError", "Piece", "S3Reader", "S3Settings", "describe_error", "fetch_ahead"]

# After the n-th failure in a row a GET waits BACKOFF_BASE * 2**(n-1) seconds, at most BACKOFF_CAP,
# times a jitter in [0.5, 1] (as the AWS SDKs add). With the default five attempts, the four waits
# add up to at most 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s (0.75 s at least); the cap is reached only from
# the seventh failure in a row on (PIPEMODE_S3_ATTEMPTS of 8 or more). A failure itself may take
# up to the read timeout (a server that stops answering), so a part fails after at most about
# attempts * read_timeout + 1.5 s: 5 * 30 + 1.5 = 151.5 s with the defaults (README, S3 channels).
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
# A read that keeps making progress between failures may fail this many times as often.
_RESUMES_PER_ATTEMPT = 4
# However small the objects, at most this many parts per worker are queued ahead: zero-byte
# objects would otherwise never fill the byte budget.
_PARTS_AHEAD_PER_WORKER = 64
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# Error codes of S3 worth another try; any other refusal (NoSuchKey, AccessDenied) is final.
_RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}


@dataclass(frozen=True)
class S3Settings:
    """How the runner reads S3. Each field is set by PIPEMODE_S3_<FIELD> in the environment.

    Parts of 8 MiB as boto3's transfer manager cuts them; per channel, 16 GETs at once (enough to
    hide tens of milliseconds per request behind small objects) and at most 128 MiB fetched
    ahead of the FIFO.
    """

    concurrency: int = 16
    part_size: int = 8 << 20
    max_bytes_in_flight: int = 128 << 20
    # Tries per request (botocore's standard retry mode, for listings and manifests), and per
    # GET of an object part: failures in a row without a byte (S3Reader).
    attempts: int = 5
    connect_timeout: float = 10.0
    # Seconds without a byte from the server before a read fails (and is retried).
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) <= 0:
                raise JobConfigError(f"S3 setting {item.name} must be positive")

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> S3Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = f"PIPEMODE_S3_{item.name.upper()}"
            text = env.get(name)
            if text is None:
                continue
            kind = float if "timeout" in item.name else int
            try:
                values[item.name] = kind(text)
            except ValueError:
                raise JobConfigError(f"{name} must be a number, not {text!r}") from None
        return cls(**values)

    def boto_config(self, own_retries: bool = False) -> Any:
        """botocore's Config; with `own_retries` (S3Reader's GETs) each request is tried once,
        since the reader retries it itself: botocore's retries within each of the reader's would
        multiply the time a stalled server takes to fail. (botocore's `max_attempts` counts the
        retries after the first try; `total_max_attempts` counts the tries.)"""
        from botocore.config import Config  # type: ignore[import-untyped]

        tries = 1 if own_retries else self.attempts
        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": tries},
            # Every worker of a few channels at once keeps its connection open.
            max_pool_connections=max(10, 4 * self.concurrency),
        )


class _BadResponse(ConnectionError):
    """A response that cannot be the object's: cut in its header, or of another version."""


class ObjectReadError(OSError):
    """An object that could not be read whole: names its URI and the byte reached."""

    def __init__(self, uri: str, offset: int, reason: str) -> None:
        super().__init__(f"cannot read {uri} at byte {offset}: {reason}")
        self.uri = uri
        self.offset = offset


def describe_error(error: BaseException) -> str:
    # botocore's ClientError carries the service's code and message; nothing secret is in them.
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".rstrip(": ")
    if isinstance(error, _BadResponse):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _status(error: BaseException) -> int:
    """The HTTP status of an S3 error response, 0 for any other error."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return 0


def _is_retryable(error: BaseException) -> bool:
    """A fault of the connection or a server error is worth another try; a refusal is not."""
    from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
    from urllib3.exceptions import HTTPError

    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return _status(error) >= 500 or response["Error"].get("Code") in _RETRYABLE_CODES
    # botocore wraps the faults of a connection (reset, timeout, short body) in BotoCoreError;
    # urllib3's and the socket's own may come through as they are.
    faults = (BotoCoreError, HTTPError, OSError)
    return isinstance(error, faults) and not isinstance(error, ObjectReadError)


class S3Reader(io.RawIOBase):
    """Bytes [start, end) of an S3 object (to its end if `end` is None), resumed when cut.

    A GET's body can end early or fail mid-way (a reset connection, a read timeout, fewer bytes
    than Content-Length). The reader then GETs `Range: bytes=<reached>-` again. Every GET carries
    If-Match on `etag` if given (the listing's, or that of the object's first part), else on the
    first response's, so that an object is never spliced from two versions: a mismatch (412)
    fails the read at once.
    The read fails once `attempts` tries in a row brought no byte, or once it has failed
    `_RESUMES_PER_ATTEMPT * attempts` times in all: a body cut now and then (every third
    response, say) is always resumed, while a server that cuts every response after a byte still
    fails the read in bounded time. The backoff grows with the failures in a row.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        settings: S3Settings,
        start: int = 0,
        end: int | None = None,
        expected_size: int | None = None,
        etag: str | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self.bucket = bucket
        self.key = key
        self._settings = settings
        self.position = start
        self._end = end
        self._expected_size = expected_size
        # The object's size, known from the first response.
        self.size: int | None = None
        # The version every GET must match: the one given (the listing's, or that of the first
        # part of the object), else the first response's.
        self.etag: str | None = etag
        self._body: Any = None
        self._failures = 0
        # Failures since a byte last came, and the byte they failed at.
        self._in_a_row = 0
        self._failed_at = -1

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        # The body's own chunk, not a copy through readinto's buffer.
        if size is None or size < 0:
            return self.read_all()
        while True:
            if self._at_end():
                self._drop_body()
                return b""
            try:
                body = self._body or self._open()
                if self._at_end():  # an empty object, now that its size is known
                    continue
                chunk: bytes = body.read(min(size, self._stop() - self.position))
            except Exception as error:
                self._retry_or_raise(error)
                continue
            if not chunk and size > 0:
                # botocore checks Content-Length itself; this is the belt to its braces.
                short = f"the body ended at byte {self.position} of {self._stop()}"
                self._retry_or_raise(ConnectionError(short))
                continue
            self.position += len(chunk)
            return chunk

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self.read(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def _stop(self) -> int:
        stop = self._end if self._end is not None else self.size
        assert stop is not None, "known once the first response came"
        return stop

    def _at_end(self) -> bool:
        stop = self._end if self._end is not None else self.size
        return stop is not None and self.position >= stop

    def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the range, or at most `limit` bytes of it."""
        chunks = []
        count = 0
        while limit is None or count < limit:
            chunk = self.read((1 << 20) if limit is None else min(1 << 20, limit - count))
            if not chunk:
                break
            chunks.append(chunk)
            count += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._drop_body()
        super().close()

    def _open(self) -> Any:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.position > 0 or self._end is not None:
            last = "" if self._end is None else str(self._end - 1)
            request["Range"] = f"bytes={self.position}-{last}"
        if self.etag:
            request["IfMatch"] = self.etag
        response = self._client.get_object(**request)
        # Held before the checks: a response they refuse is closed with the body it came with.
        self._body = response["Body"]
        self._note_size(response, ranged="Range" in request)
        self.etag = self.etag or response.get("ETag")
        return self._body

    def _note_size(self, response: dict[str, Any], ranged: bool) -> None:
        # A connection cut inside the response's header leaves a header that looks whole to
        # http.client but lacks fields or holds a cut number: such a response is retried too.
        match = _CONTENT_RANGE.fullmatch(response.get("ContentRange") or "")
        if match and match.group(3) != "*":
            size = int(match.group(3))
        elif ranged:
            raise _BadResponse("a ranged response without a Content-Range")
        else:
            size = int(response["ContentLength"])
        if self._expected_size is not None and size != self._expected_size:
            raise _BadResponse(
                f"it holds {size} bytes, not the {self._expected_size} it held when listed or "
                "first read (rewritten during the job?)"
            )
        self.size = size

    def _retry_or_raise(self, error: BaseException) -> None:
        self._drop_body()
        self._failures += 1
        in_a_row = self._failures_in_a_row(self.position)
        if isinstance(error, ObjectReadError):
            raise error
        if _status(error) == 412:  # If-Match failed: the bytes from here on are another version's
            reason = (
                f"it changed during the job (its ETag is no longer {self.etag}): the bytes from "
                "here on would be another version's"
            )
            raise ObjectReadError(self.uri, self.position, reason) from error
        if not _is_retryable(error):
            raise ObjectReadError(self.uri, self.position, describe_error(error)) from error
        attempts = self._settings.attempts
        if in_a_row >= attempts or self._failures >= _RESUMES_PER_ATTEMPT * attempts:
            reason = f"{describe_error(error)} (after {self._failures} attempts)"
            raise ObjectReadError(self.uri, self.position, reason) from error
        time.sleep(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (in_a_row - 1)) * random.uniform(0.5, 1))

    def _failures_in_a_row(self, position: int) -> int:
        if position != self._failed_at:
            self._failed_at = position
            self._in_a_row = 0
        self._in_a_row += 1
        return self._in_a_row

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close too
                body.close()


@dataclass(frozen=True)
class Piece:
    """Bytes of the `index`-th object of a run, in order; `last` ends that object."""

    index: int
    obj: Any
    data: bytes
    last: bool


@dataclass(frozen=True)
class _Part:
    index: int
    obj: Any  # an S3Object: bucket, key, uri, and size and ETag from the listing (or None)
    start: int
    # None for the first part of an object of unknown size or version, which tells both.
    end: int | None
    last: bool
    # The object's size and ETag as listed or as its first part found them: every part of one
    # object must match them, so that no object is spliced from two versions.
    size: int | None
    etag: str | None

    @property
    def budget(self) -> int:
        return self.end - self.start if self.end is not None else 0


def _plan(objects: Iterable[Any], part_size: int) -> Iterator[_Part]:
    """Each object as parts: one for a small object, `part_size` ranges of a large one.

    A large object whose listing gave no ETag goes as one first part, like one of unknown size:
    its response's ETag then pins the rest (`_tail_parts`)."""
    for index, obj in enumerate(objects):
        size, etag = obj.size, obj.etag
        if size is None or (etag is None and size > part_size):
            yield _Part(index, obj, 0, None, last=False, size=size, etag=None)
            continue
        starts = range(0, max(size, 1), part_size)
        for start in starts:
            end = min(start + part_size, size)
            yield _Part(index, obj, start, end, start == starts[-1], size=size, etag=etag)


def _fetch(client: Any, settings: S3Settings, part: _Part) -> tuple[bytes, int, str | None]:
    """A part's bytes, and the object's size and ETag."""
    obj = part.obj
    whole = part.start == 0 and (part.end is None or part.end == part.size)
    # A whole object is one plain GET (a Range on an empty object is refused); a part is ranged.
    reader = S3Reader(
        client,
        obj.bucket,
        obj.key,
        settings,
        start=part.start,
        end=None if whole else part.end,
        expected_size=part.size,
        etag=part.etag,
    )
    with reader:
        data = reader.read_all(settings.part_size if part.end is None else None)
        assert reader.size is not None
        return data, reader.size, reader.etag


def fetch_ahead(objects: Iterable[Any], client: Any, settings: S3Settings) -> Iterator[Piece]:
    """The objects' bytes in order, as pieces, fetched ahead by `settings.concurrency` threads.

    Why by hand: the FIFO needs the bytes in order while the GETs finish in any order. A deque of
    futures in object order is consumed from its head; parts are submitted at its tail while the
    bytes reserved by submitted, unconsumed parts stay within `max_bytes_in_flight` (always at
    least one, so a part larger than the budget still goes). An object of unknown size (from a
    manifest) is fetched as its first `part_size` bytes; when the consumer reaches it and it is
    larger, its tail is fetched there, `concurrency` parts at a time: ahead of the budget, so the
    bound is then `max_bytes_in_flight + concurrency * part_size`.
    Closing the generator cancels what has not started and waits for the running GETs.
    """
    pool = concurrent.futures.ThreadPoolExecutor(
        settings.concurrency, thread_name_prefix="pipemode-s3"
    )
    try:
        yield from _in_order(pool, _plan(objects, settings.part_size), client, settings)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_order(
    pool: concurrent.futures.ThreadPoolExecutor,
    parts: Iterator[_Part],
    client: Any,
    settings: S3Settings,
) -> Iterator[Piece]:
    ahead: collections.deque[tuple[_Part, concurrent.futures.Future[tuple[bytes, int, Any]]]]
    ahead = collections.deque()
    reserved = 0
    max_parts = settings.concurrency * _PARTS_AHEAD_PER_WORKER
    upcoming = _Peekable(parts)
    while True:
        while (nxt := upcoming.peek()) is not None and len(ahead) < max_parts:
            cost = nxt.budget or settings.part_size
            if ahead and reserved + cost > settings.max_bytes_in_flight:
                break
            ahead.append((next(upcoming), pool.submit(_fetch, client, settings, nxt)))
            reserved += cost
        if not ahead:
            return
        part, future = ahead.popleft()
        data, size, etag = future.result()
        reserved -= part.budget or settings.part_size
        if part.end is None and size > len(data):
            yield Piece(part.index, part.obj, data, last=False)
            tail = _tail_parts(part, len(data), size, etag, settings.part_size)
            yield from _in_order_window(pool, tail, client, settings)
        else:
            yield Piece(part.index, part.obj, data, last=part.last or part.end is None)


def _tail_parts(
    head: _Part, start: int, size: int, etag: str | None, part_size: int
) -> Iterator[_Part]:
    """The parts after an object's first, pinned to the size and ETag its response gave."""
    starts = range(start, size, part_size)
    for offset in starts:
        end = min(offset + part_size, size)
        yield _Part(head.index, head.obj, offset, end, offset == starts[-1], size=size, etag=etag)


def _in_order_window(
    pool: concurrent.futures.ThreadPoolExecutor,
    parts: Iterator[_Part],
    client: Any,
    settings: S3Settings,
) -> Iterator[Piece]:
    """Parts of one object in order, `concurrency` GETs at a time."""
    window: collections.deque[tuple[_Part, concurrent.futures.Future[tuple[bytes, int, Any]]]]
    window = collections.deque()
    for part in itertools.chain(parts, [None]):
        if part is not None:
            window.append((part, pool.submit(_fetch, client, settings, part)))
            if len(window) < settings.concurrency:
                continue
        while window and (part is None or len(window) >= settings.concurrency):
            done, future = window.popleft()
            yield Piece(done.index, done.obj, future.result()[0], done.last)


class _Peekable:
    def __init__(self, items: Iterator[_Part]) -> None:
        self._items = items
        self._next: _Part | None = None
        self._done = False

    def peek(self) -> _Part | None:
        if self._next is None and not self._done:
            self._next = next(self._items, None)
            self._done = self._next is None
        return self._next

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> _Part:
        item = self.peek()
        if item is None:
            raise StopIteration
        self._next = None
        return item
