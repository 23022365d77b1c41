"""The transform: a real image variant (thumbnail) of a source image, made from a stream in bounded memory.

For a variant WxH (docs/IMAGES.md has the whole story, docs/CONTRACTS.md the contract):
  1. decode the source from a ChunkReader over the store's chunk iterator (never read() whole; only WebP,
     whose decoder needs the whole file, is read whole, up to MAX_WHOLE_READ bytes); accepted inputs are
     JPEG (MPO too: its first frame), PNG, WebP, GIF and BMP (first frame of an animation);
  2. refuse a source of more than `max_pixels` pixels right after its header is read, before any pixel
     is decoded (WebP: from its first 30 bytes, before its decoder allocates the canvas);
  3. fit it within WxH keeping its aspect ratio, in the orientation its EXIF tag says (the displayed
     orientation), never upscaling: a source already within WxH is re-encoded at its own size;
  4. JPEG sources are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling via `Image.draft`) when
     that still leaves at least REDUCING_GAP times the target, then every source is resized with
     `reduce()` + BICUBIC (`reducing_gap`, as `Image.thumbnail` does) and turned upright (the same
     transposition as `ImageOps.exif_transpose`, applied to the small image);
  5. encode in the source's format (JPEG -> JPEG, PNG -> PNG, WebP -> WebP, GIF/BMP -> PNG) at
     `quality` (JPEG, WebP; PNG is lossless), keeping alpha (PNG, WebP; a JPEG has none), the ICC
     profile, and recording the source's sha256 in the variant (JPEG: a COM comment, PNG: a tEXt
     chunk, WebP: an XMP packet) so recovery can tell whether a variant was made from the current
     source (`verify_output`);
  6. the encoded variant goes to a SpooledSink (memory up to SPOOL_MEMORY, then a temporary file) and
     is streamed out in chunks to `ObjectStore.write_chunks` by the caller.

Bad sources raise the ImageError subclasses of tqengine.errors (permanent: dead-lettered with their class
name); errors of the store itself (transient or not) pass through unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from PIL import Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from .errors import (
    DecompressionBomb,
    ImageCorrupt,
    ImageTruncated,
    NotAnImage,
    TaskError,
    UnsupportedImage,
    UnsupportedImageMode,
    ZeroSizedVariant,
)
from .imagestream import ChunkReader, ReadAllTooLarge, ReadBudgetExceeded, SpooledSink, StreamSeekError
from .tasks import parse_variant

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
OUTPUT_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}   # any other -> PNG
DEFAULT_QUALITY = 85
DEFAULT_MAX_PIXELS = 89_478_485      # Pillow's Image.MAX_IMAGE_PIXELS (a test checks they agree)
HEADER_LIMIT = 16 << 20              # the most bytes read before the pixel data (APP/ancillary chunks)
MAX_WHOLE_READ = 64 << 20            # the largest WebP read whole by its decoder
READ_BUFFER = 64 << 10              # io.BufferedReader in front of the ChunkReader
SPOOL_MEMORY = 8 << 20               # encoded variant bytes held in memory before spilling to a temp file
REDUCING_GAP = 2.0                   # reduce() by whole factors down to 2x the target, then RESAMPLE
RESAMPLE = Image.Resampling.BICUBIC  # Image.thumbnail's filter: LANCZOS costs 1.5x (docs/IMAGES.md)
PNG_COMPRESS_LEVEL = 3               # zlib level of PNG variants: 6 (Pillow's default) costs 1.6x
WEBP_METHOD = 2                      # libwebp effort 0..6: 4 (Pillow's default) costs 2.7x on a 200x150 variant
SOURCE_DIGEST_KEY = "tq:sourceSha256"
MESSAGE_LIMIT = 300

SUPPORTED_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
# EXIF orientation -> the transposition that makes the image upright (the table of ImageOps.exif_transpose)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
_XMP = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        'xmlns:tq="urn:task-queue-lab:1" tq:sourceSha256="{digest}"/></rdf:RDF></x:xmpmeta>'
        '<?xpacket end="r"?>')
_DIGEST_IN_TEXT = re.compile(rb'tq:sourceSha256[=]"?([0-9a-f]{64})')
_WEBP_TOO_LARGE = f"a WebP source is read whole by its decoder, and this one is larger than {MAX_WHOLE_READ >> 20} MiB"


@dataclass
class Variant:
    """An encoded variant waiting to be written: stream it with chunks(), then close()."""
    format: str            # JPEG, PNG or WEBP
    width: int
    height: int
    source_format: str     # what Pillow identified the source as
    source_size: tuple[int, int]
    source_sha256: str
    sink: SpooledSink

    @property
    def nbytes(self) -> int:
        return self.sink.size

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        return self.sink.chunks(size)

    def close(self) -> None:
        self.sink.close()


def fit_within(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The size of a width x height image fitted within box_w x box_h at its aspect ratio, never larger
    than it is; ZeroSizedVariant if a side would round to 0 pixels."""
    if width <= 0 or height <= 0:
        raise ZeroSizedVariant(f"the source is {width}x{height}: no variant can be made of it")
    scale = min(box_w / width, box_h / height, 1.0)
    if scale >= 1.0:
        return width, height
    out_w, out_h = round(width * scale), round(height * scale)
    if out_w < 1 or out_h < 1:
        raise ZeroSizedVariant(f"a {width}x{height} source fitted within {box_w}x{box_h} would be "
                               f"{out_w}x{out_h} pixels")
    return min(out_w, box_w), min(out_h, box_h)


def make_variant(source_chunks: Iterable[bytes], width: int, height: int, quality: int = DEFAULT_QUALITY,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Variant:
    """Decode the source stream, fit it within width x height, encode it; see the module docstring.
    The chunk iterator is consumed to its end (its sha256 goes into the variant) or closed on failure."""
    reader = ChunkReader(iter(source_chunks), max_read_all=MAX_WHOLE_READ)
    sink = None
    try:
        with _decoding(reader, "source"):
            im = _open(reader, max_pixels)
            source_format = im.format or "?"
            source_size = im.size
            _check_mode(im)
            reader.set_budget(reader.fetched + _raw_bytes(im) + HEADER_LIMIT, "(more data than its pixels need)")
            orientation = _orientation(im) if source_format in ("JPEG", "MPO") else 1
            upright_size = _upright(im.size, orientation)
            out_w, out_h = fit_within(*upright_size, width, height)
            stored_target = _upright((out_w, out_h), orientation)   # the target in the stored orientation
            if source_format in ("JPEG", "MPO") and stored_target != im.size:
                im.draft(None, (int(stored_target[0] * REDUCING_GAP), int(stored_target[1] * REDUCING_GAP)))
            im.load()
            if source_format not in ("JPEG", "MPO"):
                orientation = _orientation(im)      # PNG may carry its eXIf chunk after the pixel data
                out_w, out_h = fit_within(*_upright(im.size, orientation), width, height)
                stored_target = _upright((out_w, out_h), orientation)
            reader.drain()
        digest = reader.sha256_hex()
        out_format = OUTPUT_FORMATS.get(source_format, "PNG")
        frame = _working_mode(im)
        icc = im.info.get("icc_profile") if im.mode not in ("CMYK",) else None
        if frame.size != stored_target:
            frame = frame.resize(stored_target, RESAMPLE, reducing_gap=REDUCING_GAP)
        if orientation in UPRIGHT:
            frame = frame.transpose(UPRIGHT[orientation])
        if out_format == "JPEG" and frame.mode in ("LA", "RGBA"):
            frame = _on_white(frame)
        sink = SpooledSink(SPOOL_MEMORY)
        frame = _plain(frame)
        frame.save(cast(IO[bytes], sink), format=out_format, **_save_params(out_format, quality, digest, icc))
        return Variant(out_format, frame.width, frame.height, source_format, source_size, digest, sink)
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    finally:
        reader.close()


def recorded_source_digest(im: Image.Image) -> str | None:
    """The source sha256 a variant made by make_variant carries, or None."""
    text = im.info.get(SOURCE_DIGEST_KEY)
    if isinstance(text, str) and re.fullmatch(r"[0-9a-f]{64}", text):
        return text
    for field in ("comment", "xmp"):
        value = im.info.get(field)
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        if isinstance(value, bytes):
            match = _DIGEST_IN_TEXT.search(value)
            if match:
                return match.group(1).decode("ascii")
    return None


def verify_output(output_chunks: Iterable[bytes], variant: str, source_chunks: Iterable[bytes]) -> str | None:
    """None if the output is a complete variant of the source: it decodes (JPEG, PNG or WebP), fits
    WxH, and records the sha256 of exactly these source bytes. Else a one-line reason. The output
    stream is read to its end either way, the source only when the output itself is sound."""
    try:
        box_w, box_h = parse_variant(variant)
    except TaskError as exc:
        return str(exc)
    reader = ChunkReader(iter(output_chunks), max_read_all=MAX_WHOLE_READ)
    try:
        try:
            with _decoding(reader, "variant"):
                im = _open(reader, DEFAULT_MAX_PIXELS)
                im.load()
                reader.drain()
        except TaskError as exc:
            return f"the variant does not decode: {exc}"
        if im.format not in ("JPEG", "PNG", "WEBP"):
            return f"the variant is {im.format}, not JPEG, PNG or WebP"
        if im.width > box_w or im.height > box_h:
            return f"the variant is {im.width}x{im.height}, which does not fit {variant}"
        recorded = recorded_source_digest(im)
    finally:
        reader.close()
    if recorded is None:
        return "the variant records no source sha256"
    digest = hashlib.sha256()
    for chunk in source_chunks:
        digest.update(chunk)
    if digest.hexdigest() != recorded:
        return "the variant was made from another source (its recorded sha256 differs)"
    return None


# -- decoding ------------------------------------------------------------------------------------------
def _open(reader: ChunkReader, max_pixels: int) -> ImageFile.ImageFile:
    head = reader.peek_head(32)
    if not head:
        raise NotAnImage("the source is empty (0 bytes)")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        raise UnsupportedImage("TIFF is not decoded from a stream (it needs random access): convert it to PNG")
    canvas = _webp_canvas(head)
    if canvas is not None:
        _check_pixels(canvas, max_pixels, "WEBP")
        reader.set_budget(None)           # read whole by its decoder, up to MAX_WHOLE_READ (ReadAllTooLarge)
    else:
        reader.set_budget(HEADER_LIMIT, f"of headers (the most read before the pixel data is {HEADER_LIMIT >> 20} MiB)")
    try:
        # a C buffer in front: Pillow's header parsers read a few bytes at a time, and each Python-level
        # read costs a microsecond; seeks inside the buffer never reach the reader
        im = Image.open(io.BufferedReader(reader, READ_BUFFER), formats=list(ACCEPTED_FORMATS))
    except UnidentifiedImageError:
        raise NotAnImage(f"the source is not a JPEG, PNG, WebP, GIF or BMP image (it starts with "
                         f"{head[:8].hex()})") from None
    except OSError:
        if canvas is not None and reader.at_eof and reader.fetched < 8 + int.from_bytes(head[4:8], "little"):
            raise ImageTruncated(f"the WebP source ends after {reader.fetched} of "
                                 f"{8 + int.from_bytes(head[4:8], 'little')} bytes") from None
        raise
    _check_pixels(im.size, max_pixels, im.format or "?")
    return im


def _check_pixels(size: tuple[int, int], max_pixels: int, fmt: str) -> None:
    if size[0] * size[1] > max_pixels:
        raise DecompressionBomb(f"the {fmt} source is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over "
                                f"the limit of {max_pixels:,} (max_image_pixels)")


def _check_mode(im: Image.Image) -> None:
    if im.mode not in SUPPORTED_MODES:
        raise UnsupportedImageMode(f"the {im.format} source has pixel mode {im.mode!r}, which has no 8-bit "
                                   "variant here (supported: " + ", ".join(sorted(SUPPORTED_MODES)) + ")")


def _webp_canvas(head: bytes) -> tuple[int, int] | None:
    """(width, height) a WebP file's first 30 bytes declare, or None if it is not a WebP file."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    kind = head[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return (0, 0)


def _raw_bytes(im: Image.Image) -> int:
    return im.width * im.height * max(1, len(im.getbands()))


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block says nothing about orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


@contextlib.contextmanager
def _decoding(reader: ChunkReader, what: str) -> Iterator[None]:
    """Turn what Pillow (or the reader) raises while decoding into the engine's error classes."""
    try:
        yield
    except TaskError:
        raise
    except BaseException as exc:
        if reader.error is not None:       # the store failed mid-stream: that is the error, whatever Pillow says
            if reader.error is exc:
                raise
            raise reader.error from None
        mapped = _map_decode_error(exc, what)
        if mapped is None:
            raise
        raise mapped from None


def _map_decode_error(exc: BaseException, what: str) -> TaskError | None:
    text = _one_line(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return DecompressionBomb(f"the {what} is a decompression bomb: {text}")
    if isinstance(exc, ReadAllTooLarge):
        return DecompressionBomb(_WEBP_TOO_LARGE)
    if isinstance(exc, ReadBudgetExceeded):
        return ImageCorrupt(f"the {what} was refused: {text}")
    if isinstance(exc, StreamSeekError):
        return UnsupportedImage(f"the {what} needs random access, which a stream does not give: {text}")
    if isinstance(exc, EOFError) or (isinstance(exc, OSError) and "truncated" in text):
        return ImageTruncated(f"the {what} ends early: {text}")
    if isinstance(exc, (OSError, SyntaxError, ValueError, struct.error, IndexError, TypeError, KeyError,
                        ZeroDivisionError, OverflowError)):
        return ImageCorrupt(f"the {what} cannot be decoded: {text}")
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:MESSAGE_LIMIT]


# -- encoding ------------------------------------------------------------------------------------------
def _plain(frame: Image.Image) -> Image.Image:
    """`frame` as a plain Image over the same pixels (no copy) when it is still the decoded file itself (a
    source saved at its own size and mode). Pillow's save() compares an ImageFile's file name with the target's
    through os.path.abspath: two getcwd calls, each releasing the GIL, which under 8 busy workers cost ~7% of
    the tiny-source throughput (scripts/processor_threads.py)."""
    if isinstance(frame, ImageFile.ImageFile):
        new = getattr(frame, "_new", None)       # Image._new(core): Pillow's own wrapper of a core image
        if new is not None:
            return cast(Image.Image, new(frame.im))
    return frame


def _working_mode(im: Image.Image) -> Image.Image:
    """The image in a mode that resizes well and the output formats take: L, LA, RGB or RGBA."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    if mode == "La":
        return im.convert("LA")
    if mode == "RGBa":
        return im.convert("RGBA")
    return im.convert("RGB")          # RGBX, CMYK, YCbCr


def _on_white(im: Image.Image) -> Image.Image:
    """A JPEG has no alpha: composite the image on a white background."""
    base = Image.new(im.mode[:-1], im.size, 255 if im.mode == "LA" else (255, 255, 255))
    base.paste(im, mask=im.getchannel("A"))
    return base


def _save_params(out_format: str, quality: int, digest: str, icc: bytes | None) -> dict:
    params: dict = {}
    if icc:
        params["icc_profile"] = icc
    if out_format == "JPEG":
        params.update(quality=quality, comment=f"{SOURCE_DIGEST_KEY}={digest}".encode("ascii"))
    elif out_format == "WEBP":
        params.update(quality=quality, method=WEBP_METHOD, xmp=_XMP.format(digest=digest).encode("utf-8"))
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text(SOURCE_DIGEST_KEY, digest)
        params.update(pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return params
