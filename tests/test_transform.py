"""tqengine.transform: real variants (fit, aspect, no upscale, EXIF, alpha, format), the chunk reader, and
every kind of bad image mapped to its own permanent error class."""
import hashlib
import io
import os
import zlib

import pytest
from PIL import Image, ImageOps

from runners.workload import image_bytes, image_spec, upright_image
from tqengine import errors, transform
from tqengine.imagestream import ChunkReader, StreamSeekError


def _chunks(data, size=4096):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def _variant(data, box, **kw):
    made = transform.make_variant(_chunks(data), *box, **kw)
    try:
        out = b"".join(made.chunks())
    finally:
        made.close()
    return made, out


def _encode(im, fmt, **params):
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.mark.parametrize("source, box, expect", [
    ((640, 480), (200, 200), (200, 150)), ((480, 640), (200, 200), (150, 200)), ((1000, 10), (100, 100), (100, 1)),
    ((100, 80), (800, 600), (100, 80)), ((300, 300), (100, 50), (50, 50)), ((333, 222), (100, 100), (100, 67))])
def test_fit_within_keeps_aspect_and_never_upscales(source, box, expect):
    assert transform.fit_within(*source, *box) == expect


def test_fit_within_refuses_a_zero_side():
    with pytest.raises(errors.ZeroSizedVariant, match="10000x1 source fitted within 100x100 would be 100x0"):
        transform.fit_within(10000, 1, 100, 100)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_variant_fits_keeps_format_and_records_the_source_digest(ext):
    key = f"t/photo.{ext}"
    data = image_bytes(key, 640, 480)
    made, out = _variant(data, (200, 200))
    with Image.open(io.BytesIO(out)) as im:
        assert im.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext] == made.format
        assert im.size == (made.width, made.height) == (200, 150)
        assert transform.recorded_source_digest(im) == hashlib.sha256(data).hexdigest() == made.source_sha256
    assert transform.verify_output([out], "200x200", [data]) is None
    assert "another source" in transform.verify_output([out], "200x200", [data + b"x"])
    assert "does not fit" in transform.verify_output([out], "199x150", [data])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_imageops_exif_transpose(orientation):
    """Each of the 8 EXIF orientations: the variant is what ImageOps.exif_transpose + resize gives, and the red
    block drawn top-left as displayed is top-left in the variant."""
    upright = upright_image("t/o.jpg", 120, 80)
    stored = upright.transpose(getattr(Image.Transpose, {
        2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90",
        7: "TRANSVERSE", 8: "ROTATE_270"}[orientation])) if orientation != 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(stored, "PNG", exif=exif.tobytes())           # lossless, so pixels compare exactly
    with Image.open(io.BytesIO(data)) as im:
        reference = ImageOps.exif_transpose(im).resize((60, 40), transform.RESAMPLE, reducing_gap=2.0)
    made, out = _variant(data, (60, 60))
    with Image.open(io.BytesIO(out)) as im:
        im.load()
        assert im.size == (60, 40)
        # resizing before turning (the engine: cheaper) or after (exif_transpose first) differ by rounding only
        got, want = im.convert("RGB").tobytes(), reference.convert("RGB").tobytes()
        diffs = [abs(a - b) for a, b in zip(got, want, strict=True)]
        assert max(diffs) <= 3 and sum(diffs) / len(diffs) < 0.5
        r, g, b = im.convert("RGB").getpixel((2, 2))
        assert r > 180 and g < 80


@pytest.mark.timeout(30)
def test_generated_sources_with_orientation_come_out_upright():
    seen = set()
    for n in range(40):
        key = f"o/{n}.jpg"
        spec = image_spec(key, 90, 60)
        if spec["orientation"] == 1:
            continue
        seen.add(spec["orientation"])
        _made, out = _variant(image_bytes(key, 90, 60), (45, 45))
        with Image.open(io.BytesIO(out)) as im:
            assert im.size == (45, 30)
            r, g, b = im.convert("RGB").getpixel((2, 2))
            assert r > 150 and g < 110, (key, spec)
    assert len(seen) >= 4


@pytest.mark.timeout(30)
def test_alpha_is_kept_in_png_and_webp_and_flattened_on_white_in_jpeg():
    rgba = upright_image("a.png", 100, 80, alpha=True)
    rgba.putpixel((99, 79), (0, 0, 0, 0))
    for fmt, mode in (("PNG", "RGBA"), ("WEBP", "RGBA")):
        _made, out = _variant(_encode(rgba, fmt, **({"lossless": True} if fmt == "WEBP" else {})), (50, 50))
        with Image.open(io.BytesIO(out)) as im:
            assert im.mode == mode and im.getchannel("A").getextrema()[0] < 50
    assert transform._on_white(Image.new("RGBA", (4, 4), (0, 0, 0, 0))).getpixel((1, 1)) == (255, 255, 255)
    la = Image.new("LA", (10, 10), (0, 0))
    assert transform._on_white(la).mode == "L" and transform._on_white(la).getpixel((0, 0)) == 255


@pytest.mark.timeout(30)
def test_other_formats_become_png_and_palette_transparency_survives():
    base = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    gif = _encode(base.convert("P"), "GIF", transparency=0)
    bmp = _encode(base, "BMP")
    for data, mode in ((gif, "RGBA"), (bmp, "RGB")):
        made, out = _variant(data, (32, 32))
        with Image.open(io.BytesIO(out)) as im:
            assert made.format == im.format == "PNG" and im.mode == mode and im.size == (32, 24)


@pytest.mark.timeout(30)
def test_jpeg_is_drafted_and_quality_is_applied():
    data = image_bytes("q.jpg", 1600, 1200)
    low, out_low = _variant(data, (200, 200), quality=20)
    high, out_high = _variant(data, (200, 200), quality=95)
    assert len(out_low) < len(out_high)
    im = Image.open(io.BytesIO(data))
    assert im.draft(None, (400, 300))[1] == (0, 0, 400.0, 300.0)    # the scale make_variant asks for: 1/4


# -- bad images: each its own permanent class, one line ------------------------------------------------
def _jpeg():
    return image_bytes("bad/base.jpg", 200, 150)


def _png_header(width, height):
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    def chunk(kind, body):
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _webp_vp8x(width, height):
    body = b"VP8X" + (10).to_bytes(4, "little") + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + \
        (height - 1).to_bytes(3, "little")
    return b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WEBP" + body


BAD = {
    "empty": (b"", errors.NotAnImage),
    "text": (b"just some text, not an image at all\n" * 50, errors.NotAnImage),
    "truncated-jpeg": (_jpeg()[:1500], errors.ImageTruncated),
    "truncated-png": (image_bytes("bad/t.png", 200, 150)[:3000], errors.ImageTruncated),
    "truncated-webp": (image_bytes("bad/t.webp", 200, 150)[:800], errors.ImageTruncated),
    "png-bomb": (_png_header(40000, 40000), errors.DecompressionBomb),
    "webp-bomb": (_webp_vp8x(16000, 16000), errors.DecompressionBomb),
    "tiff": (b"II*\x00" + b"\x00" * 64, errors.UnsupportedImage),
    "16-bit-grey": (_encode(Image.new("I;16", (20, 20), 500), "PNG"), errors.UnsupportedImageMode),
    "strip": (_encode(Image.new("L", (2000, 1), 9), "PNG"), errors.ZeroSizedVariant),
    "corrupt-png": (image_bytes("bad/c.png", 200, 150)[:200] + b"\x00" * 4000, errors.ImageError),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_sources_raise_their_own_permanent_class(name):
    data, cls = BAD[name]
    with pytest.raises(cls) as info:
        _variant(data, (100, 100))
    assert isinstance(info.value, errors.PermanentError)
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 400


def test_pixel_limit_is_the_engines_not_pillows_global():
    data = image_bytes("lim.png", 200, 150)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(errors.DecompressionBomb, match="30,000 pixels, over the limit of 10,000"):
        _variant(data, (50, 50), max_pixels=10_000)
    assert Image.MAX_IMAGE_PIXELS == before == transform.DEFAULT_MAX_PIXELS
    _variant(data, (50, 50), max_pixels=30_000)


def test_store_errors_pass_through_unchanged():
    data = _jpeg()

    def broken():
        yield data[:2000]
        raise errors.StoreConnectionError("connection reset after 2000 bytes")

    with pytest.raises(errors.StoreConnectionError, match="reset"):
        transform.make_variant(broken(), 100, 100)


def test_a_refused_source_is_not_read_to_its_end():
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield b"\x00" * 65536

    with pytest.raises(errors.NotAnImage):
        transform.make_variant(endless(), 100, 100)
    assert len(pulled) <= 2


def test_chunk_reader_reads_seeks_within_its_window_and_hashes_everything():
    data = bytes(range(256)) * 4000
    reader = ChunkReader(iter(_chunks(data, 1000)), window_bytes=5000)
    assert reader.read(10) == data[:10]
    reader.seek(0)
    assert reader.read(3) == data[:3]
    reader.seek(200_000)
    assert reader.read(5) == data[200_000:200_005]
    reader.seek(-3000, 1)
    assert reader.read(2) == data[197_005:197_007]
    with pytest.raises(StreamSeekError):
        reader.seek(0)
    with pytest.raises(StreamSeekError):
        reader.seek(0, 2)
    reader.drain()
    assert reader.sha256_hex() == hashlib.sha256(data).hexdigest()
    reader.close()


def test_default_pixel_limit_is_pillows():
    from tqengine import Config
    assert transform.DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS == Config().max_image_pixels


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_a_source_saved_at_its_own_size_makes_no_getcwd_call(ext, monkeypatch):
    """Pillow's save() of the decoded file itself (a source smaller than the box, in a mode kept as it is)
    compared its file name with the target's through os.path.abspath: two getcwd calls a task, each releasing
    the GIL, ~7% of tiny-source throughput under 8 workers. The variant is now saved from a plain Image over the
    same pixels, with the same bytes."""
    data = image_bytes(f"x/a.{ext}", 40, 30)
    calls = []
    real = os.getcwd
    monkeypatch.setattr(os, "getcwd", lambda: calls.append(1) or real())
    with monkeypatch.context() as old_way:
        old_way.setattr(transform, "_plain", lambda frame: frame)          # the decoded file saved as it is
        made, before = _variant(data, (200, 200))
    assert (made.width, made.height) == (40, 30) and len(calls) == 2       # what it cost
    calls.clear()
    made, after = _variant(data, (200, 200))
    assert calls == [] and after == before
