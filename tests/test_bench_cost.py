"""The memory method of the cost benchmark counts latent-sized buffers correctly."""
import os
import subprocess
import sys
from pathlib import Path

from bench.cost import MEMORY_ENV

SCRIPT = """
import torch
from bench.cost import peak_extra_buffers
x = torch.randn(1, 16, 256, 256)  # 4 MiB: page-level noise is negligible
def three_live(x):
    a = x * 2; b = a + 1; c = b * b
    return c
def two_at_most(x):
    a = x * 2; b = a + 1; del a; c = b * 3; del b
    return c
for fn in (three_live, two_at_most): peak_extra_buffers(fn, x)  # warm-up
print(peak_extra_buffers(three_live, x), peak_extra_buffers(two_at_most, x))
"""


def test_peak_extra_buffers_counts_live_latents():
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=dict(os.environ, **MEMORY_ENV),
                         capture_output=True, text=True, check=True, timeout=60)
    three, two = map(float, out.stdout.split())
    assert abs(three - 3) < 0.25 and abs(two - 2) < 0.25
