"""Processing one attempt of one task: stream the source, make the image variant, write it atomically,
padded to the injected latency.

`latency_ms` is the service time of one attempt, the way a real task spends most of it waiting on
I/O: the real work (read, transform, write) runs first, then a sleep pads the attempt to the drawn
latency. An injected fault sleeps the whole latency (a timeout costs time) and then raises. So the
ceiling workers * 1000 / latency_ms is the true capacity, and efficiency measures the engine alone;
with latency_ms 0 the real work alone sets the pace.

Knows nothing of queues or threads. The source is decoded from the store's chunk stream
(tqengine.transform: a file-like reader over the chunks, never the whole object in memory), the
encoded variant is spooled (memory, then a temporary file) and written through a temporary name renamed
into place, so a reader never sees a partial variant.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from . import faults, transform
from .errors import AttemptTimeout, InjectedPermanent, InjectedTransient
from .objects.base import ObjectStore
from .tasks import check_key, parse_variant


def output_key_for(image_key: str, variant: str) -> str:
    """The variant's key: `variants/<image_key>@<WxH>`, no extension whatever its format."""
    return f"variants/{image_key}@{variant}"


class Processor:
    def __init__(self, objects: ObjectStore, latency_ms: float = 0.0, latency_jitter_ms: float = 0.0,
                 transient_rate: float = 0.0, permanent_rate: float = 0.0, seed: int = 0,
                 image_quality: int = transform.DEFAULT_QUALITY,
                 max_image_pixels: int = transform.DEFAULT_MAX_PIXELS,
                 attempt_timeout_s: float | None = None) -> None:
        self.objects = objects
        self.latency_ms = latency_ms
        self.latency_jitter_ms = latency_jitter_ms
        self.transient_rate = transient_rate
        self.permanent_rate = permanent_rate
        self.seed = seed
        self.image_quality = image_quality
        self.max_image_pixels = max_image_pixels
        self.attempt_timeout_s = attempt_timeout_s
        self._inject = bool(latency_ms or latency_jitter_ms or transient_rate or permanent_rate)

    @classmethod
    def from_config(cls, config: Any, objects: ObjectStore) -> Processor:
        return cls(objects, config.latency_ms, config.latency_jitter_ms, config.transient_rate,
                   config.permanent_rate, config.seed, config.image_quality, config.max_image_pixels,
                   config.attempt_timeout_s)

    def process(self, image_key: str, variant: str, key: str, attempt: int) -> tuple[str, str, int]:
        """Run one attempt; return (output_key, sha256 hex, bytes written) or raise."""
        check_key(image_key)
        width, height = parse_variant(variant)
        started = time.perf_counter()
        latency_s = 0.0
        if self._inject:
            latency_s, fault = faults.plan(self.seed, key, attempt, self.latency_ms,
                                           self.latency_jitter_ms, self.transient_rate, self.permanent_rate)
            if fault is not None:
                if latency_s:
                    time.sleep(latency_s)
                if fault == faults.PERMANENT:
                    raise InjectedPermanent(f"injected permanent fault (seed {self.seed}, attempt {attempt})")
                raise InjectedTransient(f"injected transient fault (seed {self.seed}, attempt {attempt})")
        output_key = output_key_for(image_key, variant)
        source = self.objects.read_chunks(image_key)
        if self.attempt_timeout_s is not None:
            source = _until(started + self.attempt_timeout_s, source, image_key)
        made = transform.make_variant(source, width, height, self.image_quality, self.max_image_pixels)
        try:
            output = made.chunks(self.objects.chunk_size)
            if self.attempt_timeout_s is not None:
                output = _until(started + self.attempt_timeout_s, output, output_key)
            nbytes, digest = self.objects.write_chunks(output_key, output)
        finally:
            made.close()
        if latency_s:
            remaining = started + latency_s - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
        return output_key, digest, nbytes

    def completed_output(self, image_key: str, variant: str) -> tuple[str, str, int] | None:
        """(output_key, sha256 hex, bytes) if the variant already in the store is complete and was made
        from the current source: it decodes, fits WxH and records the sha256 of the source as it is now
        (transform.verify_output). Else None. Used at recovery for an attempt whose result was written
        (outputs are renamed into place whole) but whose success was never committed."""
        output_key = output_key_for(image_key, variant)
        try:
            if not self.objects.exists(output_key):
                return None
            digest = hashlib.sha256()
            size = 0

            def hashed(chunks: Iterable[bytes]) -> Iterator[bytes]:
                nonlocal size
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

            problem = transform.verify_output(hashed(self.objects.read_chunks(output_key)), variant,
                                              _Lazy(lambda: self.objects.read_chunks(image_key)))
        except Exception:   # unreadable source or output: not a completed attempt
            return None
        return None if problem else (output_key, digest.hexdigest(), size)


class _Lazy:
    """An iterable that opens its stream only when iterated (the source is read only if the variant is sound)."""

    def __init__(self, opener: Any) -> None:
        self._opener = opener

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._opener())


def _until(deadline: float, chunks: Iterable[bytes], key: str) -> Iterator[bytes]:
    """`chunks`, failing with AttemptTimeout at the first chunk past `deadline` (perf_counter): a source
    that never ends (a growing file, a server that drips) bounds the attempt, not the worker's life."""
    for chunk in chunks:
        if time.perf_counter() > deadline:
            raise AttemptTimeout(f"attempt ran past attempt_timeout_s while streaming {key[:200]!r}")
        yield chunk
