"""Streaming: processing a 256 MiB object must not raise peak RSS by 16 MiB or more.

Runs in a fresh interpreter so the peak belongs to this work alone.
"""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = r"""
import json, os, resource, sys, tempfile
sys.path.insert(0, sys.argv[1])
from tqengine.objects.local import LocalObjectStore
from tqengine.processor import Processor
from runners.workload import write_object
size = int(sys.argv[2])
root = tempfile.mkdtemp()
write_object(root, "big/object.raw", size)
write_object(root, "big/warm.raw", 1 << 20)
store = LocalObjectStore(root)
processor = Processor(store)
processor.process("big/warm.raw", "64x64", "warm", 1)   # warm-up: imports, buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
output_key, digest, nbytes = processor.process("big/object.raw", "128x128", "k", 1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "output_bytes": nbytes,
                  "source_bytes": os.path.getsize(os.path.join(root, "big", "object.raw"))}))
"""


@pytest.mark.timeout(120)
def test_256_mib_object_streams_in_constant_memory(tmp_path):
    size = 256 * 1024 * 1024
    proc = subprocess.run([sys.executable, "-c", PROBE, ROOT, str(size)], capture_output=True, text=True,
                          timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    grew_mib = (figures["after_kib"] - figures["before_kib"]) / 1024
    print(f"256 MiB object: peak RSS grew {grew_mib:.2f} MiB (before {figures['before_kib'] / 1024:.1f} MiB)")
    assert figures["source_bytes"] == size and figures["output_bytes"] > size
    assert grew_mib < 16
