"""Streaming and bounded memory, each figure measured in a fresh interpreter so the peak is this work's alone:

- a 256 MiB object that is not an image is refused (NotAnImage) after its first bytes, never read whole:
  peak RSS grows by less than 16 MiB;
- an 8000x5000 JPEG (40 megapixels) made into a 320x200 variant peaks well under 100 MB of RSS in all
  (interpreter, Pillow and the work): draft mode decodes it at 1/8 scale, from the store's chunk stream.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from tqengine.objects.local import LocalObjectStore
from tqengine.processor import Processor
root, key, variant = sys.argv[2], sys.argv[3], sys.argv[4]

def peak_kib():
    # VmHWM: this process's own peak (ru_maxrss on Linux keeps the parent's peak across fork and exec)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

store = LocalObjectStore(root)
processor = Processor(store)
processor.process("warm.png", "16x16", "warm", 1)   # warm-up: imports, plugins, buffers
before = peak_kib()
started = time.perf_counter()
try:
    output_key, digest, nbytes = processor.process(key, variant, "k", 1)
    outcome = {"output_bytes": nbytes}
except Exception as exc:
    outcome = {"error_class": type(exc).__name__, "error": str(exc)}
outcome.update(before_kib=before, after_kib=peak_kib(),
               seconds=time.perf_counter() - started)
print(json.dumps(outcome))
"""


def _probe(root, key, variant):
    proc = subprocess.run([sys.executable, "-c", PROBE, ROOT, str(root), key, variant], capture_output=True,
                          text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _warm(root):
    from runners.workload import write_image
    write_image(str(root), "warm.png", 24, 18)


@pytest.mark.timeout(120)
def test_256_mib_non_image_is_refused_without_being_read_whole(tmp_path):
    from runners.workload import write_object
    size = 256 * 1024 * 1024
    write_object(str(tmp_path), "big/object.jpg", size)   # random bytes under an image's name
    _warm(tmp_path)
    figures = _probe(tmp_path, "big/object.jpg", "128x128")
    grew_mib = (figures["after_kib"] - figures["before_kib"]) / 1024
    print(f"256 MiB non-image: {figures['error_class']} in {figures['seconds'] * 1000:.1f} ms, peak RSS grew "
          f"{grew_mib:.2f} MiB (before {figures['before_kib'] / 1024:.1f} MiB)")
    assert figures["error_class"] == "NotAnImage", figures
    assert grew_mib < 16
    assert os.path.getsize(tmp_path / "big" / "object.jpg") == size
    assert not (tmp_path / "variants" / "big").exists()


@pytest.mark.timeout(120)
def test_40_megapixel_jpeg_thumbnail_peaks_under_100_mb(tmp_path):
    from PIL import Image

    from runners.workload import upright_image
    big = tmp_path / "photos" / "huge.jpg"
    big.parent.mkdir()
    upright_image("photos/huge.jpg", 8000, 5000).save(big, "JPEG", quality=90)
    _warm(tmp_path)
    figures = _probe(tmp_path, "photos/huge.jpg", "320x200")
    peak_mb = figures["after_kib"] / 1024
    print(f"8000x5000 JPEG ({big.stat().st_size / 1e6:.1f} MB) -> 320x200: peak RSS {peak_mb:.1f} MiB "
          f"(warm {figures['before_kib'] / 1024:.1f} MiB), {figures['seconds'] * 1000:.0f} ms")
    assert "error_class" not in figures, figures
    with Image.open(tmp_path / "variants" / "photos" / "huge.jpg@320x200") as im:
        assert im.format == "JPEG" and im.size == (320, 200)
    assert peak_mb < 100
