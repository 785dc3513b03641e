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
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from encoder_throughput import corpus  # noqa: E402
from generation_throughput import build_models  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lote")
    parser.add_argument("--documents", type=int, default=40)
    options = parser.parse_args()
    _, bart = build_models()
    work = Path(tempfile.mkdtemp())
    docs = work / "docs.jsonl"
    with docs.open("w") as f:
        for i, text in enumerate(t for t in corpus(400) if len(t.split()) >= 40):
            if i == options.documents:
                break
            f.write(json.dumps({"custom_id": f"d{i}", "text": text}) + "\n")

    for workers in (1, 2):
        database = f"lote_bench_{uuid.uuid4().hex}"
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"create database {database}"], check=True)
        prefix = f"lote-bench-{uuid.uuid4().hex}"
        processes = []
        for index in range(workers):
            config = work / f"w{workers}-{index}.toml"
            config.write_text(f"""
[server]
grpc_addr = "127.0.0.1:{50200 + index}"
metrics_addr = ""
[device]
kind = "cpu"
threads = {2 // workers}
[amqp]
enabled = true
queue_prefix = "{prefix}"
prefetch = 8
[store]
url = "{PG}/{database}"
[[models]]
name = "distilbart"
task = "summarization"
path = "{bart}"
""")
            env = dict(os.environ, LOTE__LOG__FORMAT="json")
            process = subprocess.Popen([options.lote, "--config", str(config), "serve"], env=env,
                                       stderr=subprocess.PIPE, text=True)
            for line in process.stderr:
                if '"model ready"' in line:
                    break
            processes.append(process)
        time.sleep(1)
        start = time.perf_counter()
        subprocess.run([options.lote, "submit", "--addr", "http://127.0.0.1:50200",
                        "--task", "summarization", "--model", "distilbart", "--input", str(docs),
                        "--param", "max_new_tokens=32", "--param", "min_new_tokens=32",
                        "--param", "num_beams=1"], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        print(json.dumps({"workers": workers, "documents": options.documents, "seconds": seconds,
                          "documents_per_second": options.documents / seconds}), flush=True)
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
        for queue in ("documents.distilbart", "dead-letter", "dead-letter.accounting"):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", f"{prefix}.{queue}"],
                           capture_output=True)
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"drop database {database} with (force)"])


if __name__ == "__main__":
    main()
