"""End-to-end documents/s of a summarization job through RabbitMQ and PostgreSQL, with 1 and 2
worker processes sharing the queue.

Usage: python bench/jobs_e2e.py LOTE_BINARY [--documents N]

The model is a random-weight DistilBART-CNN-12-6 (real shapes, built once by
generation_throughput.py); each summary is forced to 32 new tokens, greedy. The workers share
this machine's cores: one worker gets 2 intra-op threads, two workers get 1 each. The time is
from `lote submit` to the job's end (submission, queueing, computing, storing the results).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from encoder_throughput import corpus  # noqa: E402
from fleet import Fleet, write_documents  # noqa: E402
from generation_throughput import build_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lote")
    parser.add_argument("--documents", type=int, default=40)
    options = parser.parse_args()
    _, bart = build_models()
    work = Path(tempfile.mkdtemp())
    texts = [t for t in corpus(400) if len(t.split()) >= 40][:options.documents]
    docs = write_documents(work / "docs.jsonl", texts)

    for workers in (1, 2):
        fleet = Fleet(options.lote, work, workers, threads=2 // workers,
                      models=[("distilbart", "summarization", bart)])
        try:
            seconds = fleet.submit("summarization", "distilbart", docs,
                                   ["max_new_tokens=32", "min_new_tokens=32", "num_beams=1"])
        finally:
            fleet.stop()
        print(json.dumps({"workers": workers, "documents": len(texts), "seconds": seconds,
                          "documents_per_second": len(texts) / seconds}), flush=True)


if __name__ == "__main__":
    main()
