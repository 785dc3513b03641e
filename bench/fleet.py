"""A fleet of `lote serve` workers on this machine sharing one RabbitMQ and one PostgreSQL, as a
cluster would: a fresh database and unique queue names per fleet, removed when it stops.
Used by the job benchmarks (jobs_e2e.py, cluster_scale.py).
"""

import json
import subprocess
import time
import uuid
from pathlib import Path

from common import start_server

PG = "postgres://postgres@127.0.0.1:5432"
FIRST_PORT = 50200


class Fleet:
    """`workers` processes, each with `threads` intra-op threads and the given models
    ((name, task, path) triples); gRPC on FIRST_PORT, FIRST_PORT + 1, ..."""

    def __init__(self, binary, work: Path, workers: int, threads: int,
                 models: list[tuple[str, str, Path]], prefetch: int = 8):
        self.binary = str(binary)
        self.database = f"lote_bench_{uuid.uuid4().hex}"
        self.prefix = f"lote-bench-{uuid.uuid4().hex}"
        self.models = [name for name, _, _ in models]
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"create database {self.database}"],
                       check=True)
        self.processes = []
        for index in range(workers):
            config = work / f"{self.prefix}-{index}.toml"
            text = (f'[server]\ngrpc_addr = "127.0.0.1:{FIRST_PORT + index}"\nmetrics_addr = ""\nhttp_addr = ""\n'
                    f'[device]\nkind = "cpu"\nthreads = {threads}\n'
                    f'[amqp]\nenabled = true\nqueue_prefix = "{self.prefix}"\nprefetch = {prefetch}\n'
                    f'[store]\nurl = "{PG}/{self.database}"\n')
            for name, task, path in models:
                text += f'[[models]]\nname = "{name}"\ntask = "{task}"\npath = "{path}"\n'
            config.write_text(text)
            self.processes.append(start_server(self.binary, config, self.models[-1]))
        # Every worker's consumers subscribe once its models are ready; give them a moment.
        time.sleep(1)

    def submit(self, task: str, model: str, documents: Path, params: list[str]) -> float:
        """Seconds from `lote submit` to the job's end (it waits for the job by default)."""
        command = [self.binary, "submit", "--addr", f"http://127.0.0.1:{FIRST_PORT}",
                   "--task", task, "--model", model, "--input", str(documents)]
        for param in params:
            command += ["--param", param]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - start

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=90)
        queues = [f"documents.{m}" for m in self.models] + ["dead-letter", "dead-letter.accounting"]
        for queue in queues:
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", f"{self.prefix}.{queue}"],
                           capture_output=True)
        subprocess.run(["psql", f"{PG}/postgres", "-qc",
                        f"drop database {self.database} with (force)"], capture_output=True)


def write_documents(path: Path, texts: list[str]) -> Path:
    with path.open("w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"custom_id": f"d{i}", "text": text}, ensure_ascii=False) + "\n")
    return path
