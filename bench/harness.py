"""`make bench`: every workload through lote and through its Python peer on this machine, with
the same threads, weights and inputs; medians of alternating runs; ratios lote / peer.

Usage: python bench/harness.py --target TARGET_DIR [--repeats R] [--seconds S]

Runs, each as its own script (so each can also be run alone):
  encoder_throughput.py    embeddings, real all-MiniLM-L6-v2, vs sentence-transformers and the
                           transformers feature-extraction pipeline
  generation_throughput.py GPT-2 small decode (1 and 8 sequences) and DistilBART 4-beam
                           summaries vs transformers' generate
  grpc_load.py             gRPC load from a separate process: embeddings and generation at several
                           rates, 1/8/32 concurrent streams, trivial calls (transport ceiling)
  jobs_transport           RabbitMQ documents/s with an echo model at prefetch 1, 32, 256
Writes bench/results/latest.json, latest.md, throughput.png and latency.png.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def run_json(command: list[str]) -> dict:
    """Runs a script that prints one JSON document (possibly after other lines)."""
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    start = out.index("{")
    return json.loads(out[start:])


def run_json_lines(command: list[str]) -> list[dict]:
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import torch
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads_used": 2,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def table(results: dict) -> str:
    rows = ["| workload | lote | peer | ratio (lote / peer) |", "| --- | ---: | ---: | ---: |"]
    emb = results["embeddings"]["tokens_per_second"]
    rows.append(f"| embeddings, tokens/s (vs sentence-transformers) | {emb['lote']:.0f} | "
                f"{emb['sentence-transformers']:.0f} | {emb['lote'] / emb['sentence-transformers']:.2f} |")
    rows.append(f"| embeddings, tokens/s (vs transformers pipeline) | {emb['lote']:.0f} | "
                f"{emb['transformers-pipeline']:.0f} | {emb['lote'] / emb['transformers-pipeline']:.2f} |")
    gen = results["generation"]
    for sequences in (1, 8):
        g = gen[f"gpt2_decode_tokens_per_second_{sequences}_seq"]
        rows.append(f"| GPT-2 small greedy, {sequences} sequence(s), tokens/s | {g['lote']:.1f} | "
                    f"{g['transformers']:.1f} | {g['ratio_lote_over_transformers']:.2f} |")
    d = gen["distilbart_seconds_per_document_4_beams"]
    rows.append(f"| DistilBART 4 beams, documents/s | {1 / d['lote']:.3f} | {1 / d['transformers']:.3f} | "
                f"{d['speedup_transformers_over_lote']:.2f} |")
    for row in results["grpc_load"]:
        if "streams" in row["scenario"]:
            rows.append(f"| gRPC {row['scenario']}, tokens/s | {row['tokens_per_second']:.0f} | - | - |")
        if row["kind"] == "tokenize":
            rows.append(f"| gRPC trivial calls/s ({row['scenario']}) | {row['calls_per_second']:.0f} | - | - |")
    for row in results["jobs_transport"]:
        rows.append(f"| RabbitMQ documents/s, echo model, prefetch {row['prefetch']} ({row['store']}) | "
                    f"{row['documents_per_second']:.0f} | - | - |")
    padding = results["embeddings"].get("lote_padding_efficiency")
    if padding is not None:
        rows.append(f"| embeddings padding efficiency (real / computed tokens) | {padding:.3f} | - | - |")
    return "\n".join(rows)


def charts(results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb = results["embeddings"]["tokens_per_second"]
    gen = results["generation"]
    groups = [
        ("embeddings\ntokens/s", {k: v for k, v in emb.items()}),
        ("GPT-2, 8 seq\ntokens/s", {"lote": gen["gpt2_decode_tokens_per_second_8_seq"]["lote"],
                                     "transformers": gen["gpt2_decode_tokens_per_second_8_seq"]["transformers"]}),
    ]
    fig, axes = plt.subplots(1, len(groups), figsize=(10, 4))
    for axis, (title, values) in zip(axes, groups):
        names = list(values)
        axis.bar(names, [values[n] for n in names], color=["#1f77b4", "#ff7f0e", "#2ca02c"][: len(names)])
        axis.set_title(title)
        axis.tick_params(axis="x", labelrotation=15)
    fig.suptitle("lote beside the Python peers (same machine, 2 threads)")
    fig.tight_layout()
    fig.savefig(RESULTS / "throughput.png", dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(7, 4))
    open_loop = [r for r in results["grpc_load"] if r["kind"] == "embed" and r["rate"]]
    open_loop.sort(key=lambda r: r["rate"])
    axis.plot([r["calls_per_second"] for r in open_loop], [r["p50_ms"] for r in open_loop], "o-", label="p50")
    axis.plot([r["calls_per_second"] for r in open_loop], [r["p99_ms"] for r in open_loop], "o-", label="p99")
    axis.set_xlabel("Embed calls/s served (open loop)")
    axis.set_ylabel("latency, ms")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("gRPC Embed latency vs load (all-MiniLM-L6-v2)")
    fig.tight_layout()
    fig.savefig(RESULTS / "latency.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="the cargo target dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--lines", type=int, default=800, help="embedding corpus lines")
    options = parser.parse_args()
    release = Path(options.target) / "release"
    lote, load, transport = release / "lote", release / "examples/load", release / "examples/jobs_transport"
    python = sys.executable
    RESULTS.mkdir(exist_ok=True)
    results = {"machine": machine()}
    print("embeddings ...", flush=True)
    results["embeddings"] = run_json([python, str(HERE / "encoder_throughput.py"), str(lote),
                                      "--repeats", str(options.repeats), "--lines", str(options.lines)])
    print("generation ...", flush=True)
    results["generation"] = run_json([python, str(HERE / "generation_throughput.py"), str(lote),
                                      "--repeats", str(options.repeats)])
    print("gRPC load ...", flush=True)
    with tempfile.TemporaryDirectory() as work:
        rows = Path(work) / "rows.json"
        subprocess.run([python, str(HERE / "grpc_load.py"), str(lote), str(load),
                        "--seconds", str(options.seconds), "--json", str(rows)],
                       check=True, capture_output=True)
        results["grpc_load"] = json.loads(rows.read_text())
    print("jobs transport ...", flush=True)
    results["jobs_transport"] = run_json_lines([str(transport), "--documents", "3000"])
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    markdown = (f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['threads_used']} threads "
                f"for each side), torch {m['torch']}.\n\n" + table(results) + "\n")
    (RESULTS / "latest.md").write_text(markdown)
    charts(results)
    print(markdown)


if __name__ == "__main__":
    main()
