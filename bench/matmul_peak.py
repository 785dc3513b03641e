"""This CPU's measured matmul peak on THREADS threads, fp32 and bf16, through the same torch
2.11 build lote links: the yardstick for the encoder's FLOP/s in the other scripts.

Usage: python bench/matmul_peak.py [--seconds S]

The peak is the best GFLOP/s over square matrices of 512 to 4096 and the encoder's own shapes
(a batch of 4096 tokens through all-MiniLM-L6-v2's and BERT-base's dense layers).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SMOKE, THREADS  # noqa: E402

SHAPES = [(n, n, n) for n in (512, 1024, 2048, 4096)] + [
    (4096, 384, 1536), (4096, 1536, 384), (4096, 768, 3072), (4096, 3072, 768)]
if SMOKE:
    SHAPES = SHAPES[:2]


def gflops(m: int, k: int, n: int, dtype, seconds: float) -> float:
    import torch
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up: packing buffers, thread pool
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * m * k * n * runs / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="per shape and dtype")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    report = {"threads": THREADS}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        each = {f"{m}x{k}x{n}": gflops(m, k, n, dtype, args.seconds) for m, k, n in SHAPES}
        report[name] = {"peak_gflops_per_second": max(each.values()), "each": each}
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
