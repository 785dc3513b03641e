"""This CPU's memory bandwidth on THREADS threads, through the same torch 2.11 build lote links:
the yardstick for decoding, which at a few rows reads every weight once per step and computes
little with it (the matmul peak, matmul_peak.py, is the yardstick for encoder batches).

Usage: python bench/memory_bandwidth.py [--seconds S] [--mib M]

Three ways of streaming a buffer far larger than the caches (M MiB, default 1024):
  read   x.sum(): every byte read once
  copy   y.copy_(x): read and written once each (counted as both, as STREAM counts it)
  gemv   a one-row matmul over a weight matrix, fp32 and bf16: what a decode step does at one
         row, bytes counted as the weight's size
`bound_gb_per_second` is the best of them: the decode bound of a step is its bytes of weights
and cache divided by it (generation_throughput.py reports those bytes).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SMOKE, THREADS  # noqa: E402


def rate(work, nbytes: int, seconds: float) -> float:
    """GB/s (1e9 bytes) of `work`, which streams `nbytes`, best of repeated timed calls."""
    work()  # warm-up: pages touched, thread pool started
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return nbytes / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--mib", type=int, default=16 if SMOKE else 1024, help="buffer size")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    elements = args.mib * 2**20 // 4
    x, y = torch.rand(elements), torch.empty(elements)
    report = {"threads": THREADS, "buffer_mib": args.mib,
              "read_gb_per_second": rate(lambda: x.sum(), x.nbytes, args.seconds),
              "copy_gb_per_second": rate(lambda: y.copy_(x), 2 * x.nbytes, args.seconds)}
    del y
    # A weight as wide as GPT-2 small's hidden size (768 columns), as many rows as the buffer holds.
    columns = 768
    rows = elements // columns
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        weight = x[: rows * columns].view(rows, columns).to(dtype)
        vector = torch.rand(1, columns, dtype=dtype)
        report[f"gemv_{name}_gb_per_second"] = rate(
            lambda: torch.nn.functional.linear(vector, weight), weight.nbytes, args.seconds)
        del weight
    report["bound_gb_per_second"] = max(v for k, v in report.items() if k.endswith("_gb_per_second"))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
