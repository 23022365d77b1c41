"""The deterministic, verifiable transform that turns a source object into a variant.

Output = b"TQLAB1 <variant>\\n" + zlib stream (level 1) of the source bytes. It is computed chunk by
chunk, so memory stays at one chunk plus zlib's window whatever the object size.
"""
import hashlib
import zlib

MAGIC = b"TQLAB1 "
LEVEL = 1


def header(variant):
    return MAGIC + variant.encode("ascii") + b"\n"


def encode_chunks(variant, source_chunks):
    """Yield the output object's bytes for the given stream of source chunks."""
    yield header(variant)
    compressor = zlib.compressobj(LEVEL)
    for chunk in source_chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def verify_output(output_chunks, variant, source_chunks, chunk_size=65536):
    """Return None if the output is the transform of the source, else a one-line reason."""
    want = hashlib.sha256()
    for chunk in source_chunks:
        want.update(chunk)
    got = hashlib.sha256()
    expected_header = header(variant)
    pending = b""
    decompressor = zlib.decompressobj()
    for chunk in output_chunks:
        if pending is not None:
            pending += chunk
            if len(pending) < len(expected_header):
                continue
            if not pending.startswith(expected_header):
                return "bad header"
            chunk, pending = pending[len(expected_header):], None
        got.update(decompressor.decompress(chunk, chunk_size))
        while decompressor.unconsumed_tail:
            got.update(decompressor.decompress(decompressor.unconsumed_tail, chunk_size))
    if pending is not None:
        return "truncated header"
    got.update(decompressor.flush())
    if not decompressor.eof:
        return "truncated zlib stream"
    if got.hexdigest() != want.hexdigest():
        return "content differs from the source"
    return None
