"""Processing one attempt of one task: stream, transform, write, padded to the injected latency.

`latency_ms` is the service time of one attempt, the way a real task spends most of it waiting on
I/O: the real work (read, transform, write) runs first, then a sleep pads the attempt to the drawn
latency. An injected fault sleeps the whole latency (a timeout costs time) and then raises. So the
ceiling workers * 1000 / latency_ms is the true capacity, and efficiency measures the engine alone.

Knows nothing of queues or threads. The source is read in chunk_size pieces and the output is
written through a temporary name and renamed into place, so memory stays flat whatever the object
size and a reader never sees a partial variant.
"""
import hashlib
import time

from . import faults, transform
from .errors import InjectedPermanent, InjectedTransient
from .tasks import check_key, parse_variant


def output_key_for(image_key, variant):
    return f"variants/{image_key}@{variant}"


class Processor:
    def __init__(self, objects, latency_ms=0.0, latency_jitter_ms=0.0, transient_rate=0.0,
                 permanent_rate=0.0, seed=0):
        self.objects = objects
        self.latency_ms = latency_ms
        self.latency_jitter_ms = latency_jitter_ms
        self.transient_rate = transient_rate
        self.permanent_rate = permanent_rate
        self.seed = seed
        self._inject = bool(latency_ms or latency_jitter_ms or transient_rate or permanent_rate)

    @classmethod
    def from_config(cls, config, objects):
        return cls(objects, config.latency_ms, config.latency_jitter_ms, config.transient_rate,
                   config.permanent_rate, config.seed)

    def process(self, image_key, variant, key, attempt):
        """Run one attempt; return (output_key, sha256 hex, bytes written) or raise."""
        check_key(image_key)
        parse_variant(variant)
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
        nbytes, digest = self.objects.write_chunks(output_key, transform.encode_chunks(variant, source))
        if latency_s:
            remaining = started + latency_s - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
        return output_key, digest, nbytes

    def completed_output(self, image_key, variant):
        """(output_key, sha256 hex, bytes) if the variant already in the store is the complete transform
        of the current source, else None. Used at recovery for an attempt whose result was written
        (outputs are renamed into place whole) but whose success was never committed."""
        output_key = output_key_for(image_key, variant)
        try:
            if not self.objects.exists(output_key):
                return None
            digest = hashlib.sha256()
            size = 0

            def hashed(chunks):
                nonlocal size
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

            problem = transform.verify_output(hashed(self.objects.read_chunks(output_key)), variant,
                                              self.objects.read_chunks(image_key))
        except Exception:   # unreadable source or output: not a completed attempt
            return None
        return None if problem else (output_key, digest.hexdigest(), size)
