"""What every benchmark script shares: the thread count, the deterministic corpus, the model
cache, and running `lote run` as a child whose wall time, CPU time (wait4) and peak RSS
(VmHWM) are read from the kernel, so lote and the Python peers are measured the same way.
"""

import json
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2
# `harness.py --smoke` (run by `make test`) sets LOTE_BENCH_SMOKE=1: every script runs end to
# end on tiny random models, kept in a cache of their own, so that the benchmarks cannot rot.
# A smoke run's figures mean nothing.
SMOKE = os.environ.get("LOTE_BENCH_SMOKE") == "1"
CACHE = Path.home() / ".cache" / ("lote-bench-smoke" if SMOKE else "lote-bench")


def shape(full: dict, tiny: dict) -> dict:
    """A model's config keywords: the real shape, or in a smoke run the tiny one."""
    return tiny if SMOKE else full

PT = ("a reunião da diretoria começou às nove horas e o time de engenharia apresentou a nova "
      "versão do serviço que é mais rápida e também mais barata para os clientes em São Paulo "
      "você não precisa fazer mais nada porque a ação foi concluída com sucesso").split()
EN = ("the quick brown fox jumps over the lazy dog while the service answers questions about "
      "documents in batches on cpu or cuda and users judge it against the python pipelines "
      "dynamic batching groups requests of similar length to cut padding").split()


# The generation prompt on both sides: 32 tokens of the benchmark's word-level vocabulary.
GENERATION_PROMPT = " ".join(f"w{100 + i}" for i in range(32))


def corpus(lines: int, seed: int = 0) -> list[str]:
    """Deterministic mix: short queries to long paragraphs, Portuguese and English."""
    rng = random.Random(seed)
    texts = []
    for i in range(lines):
        words = PT if i % 2 == 0 else EN
        length = rng.choice([3, 5, 8, 12, 20, 40, 80, 150])
        texts.append(" ".join(rng.choice(words) for _ in range(length)).capitalize() + ".")
    return texts


@dataclass
class Measured:
    """One child process: wall seconds, user+system CPU seconds, peak RSS in MiB."""
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    stderr: str


def proc_status_mib(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status in MiB (VmRSS: now, VmHWM: the peak so far); 0 once
    the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(command: list[str], env: dict | None = None) -> Measured:
    """Runs `command` to the end; fails loudly (with its stderr) when it fails.

    Peak RSS is the child's VmHWM, polled every 10 ms: wait4's ru_maxrss would not do, as
    Linux carries the parent's high-water mark across the fork and exec into the child.
    """
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, proc_status_mib(child.pid, "VmHWM"))
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {child.returncode}:\n{stderr[-4000:]}")
    return Measured(seconds, usage.ru_utime + usage.ru_stime, peak, stderr)


@dataclass
class LoteRun:
    measured: Measured
    finished: dict  # the "run finished" log record: tokens, padding, model and tokenize seconds


def lote_env(**settings: str) -> dict:
    """The environment of a lote child: CPU, THREADS threads, JSON logs, plus LOTE__ settings."""
    env = dict(os.environ, LOTE__DEVICE__THREADS=str(THREADS), LOTE__DEVICE__KIND="cpu",
               LOTE__LOG__FORMAT="json", OMP_NUM_THREADS=str(THREADS))
    return env | overrides(settings)


def overrides(settings: dict[str, str]) -> dict[str, str]:
    """LOTE__ environment variables from keyword settings: device__dtype="bf16" ->
    LOTE__DEVICE__DTYPE=bf16."""
    return {f"LOTE__{key.upper()}": value for key, value in settings.items()}


def run_lote(binary, model_dir, task: str, records: list[dict], work: Path, **settings: str) -> LoteRun:
    """`lote run` over `records` (JSONL lines); settings are LOTE__ overrides, e.g.
    device__dtype="bf16"."""
    source, out = work / "in.jsonl", work / "out.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    measured = measure([str(binary), "run", "--model", str(model_dir), "--task", task,
                        "--input", str(source), "--output", str(out)], lote_env(**settings))
    finished = next(json.loads(line) for line in measured.stderr.splitlines() if '"run finished"' in line)
    return LoteRun(measured, finished)


def lote_outputs(work: Path) -> list[dict]:
    """The output lines of the last run_lote in `work`, in input order."""
    return [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]


def startup_seconds(binary, model_dir, task: str, record: dict, work: Path, repeats: int, **settings) -> float:
    """Median wall time of a one-line run: process start and model load, subtracted from runs."""
    return statistics.median(run_lote(binary, model_dir, task, [record], work, **settings).measured.seconds
                             for _ in range(repeats))


def median_rate(amount: float, seconds: list[float]) -> float:
    return amount / statistics.median(seconds)


def write_config(path: Path, grpc: str, metrics: str, models: list[tuple[str, str, Path]]) -> Path:
    """A `lote serve` config file: CPU, THREADS threads, the given (name, task, path) models."""
    text = f'[server]\ngrpc_addr = "{grpc}"\nmetrics_addr = "{metrics}"\nhttp_addr = ""\n'
    text += f'[device]\nkind = "cpu"\nthreads = {THREADS}\n'
    for name, task, model in models:
        text += f'[[models]]\nname = "{name}"\ntask = "{task}"\npath = "{model}"\n'
    path.write_text(text)
    return path


def start_server(binary, config: Path, ready_model: str, **settings: str) -> subprocess.Popen:
    """`lote serve`, returned once `ready_model` (the last in the config) is ready; settings are
    LOTE__ overrides, e.g. device__dtype="bf16"."""
    env = dict(os.environ, LOTE__LOG__FORMAT="json") | overrides(settings)
    server = subprocess.Popen([str(binary), "--config", str(config), "serve"], env=env,
                              stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if '"model ready"' in line and f'"{ready_model}"' in line:
            # Keep reading its log, or a full pipe would stall the server.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server
    raise RuntimeError(f"lote serve exited before {ready_model} was ready")
