"""Continuous batching through gRPC under a realistic load, beside static batches of the same
requests in CTranslate2 and transformers (issue 14: ">= 2x the throughput of static batches").

Usage: python bench/mixed_generation.py LOTE_BINARY [--repeats R] [--requests N] [--load L | --span S] [--smoke]

The workload: the random-weight GPT-2 small of generation_throughput.py (tiny under --smoke),
N seeded requests (48; 6 in a smoke run) with mixed prompt lengths (8 to 160 words of its
word-level vocabulary) and mixed output lengths (8 to 128 new tokens, each forced: min = max),
greedy, arriving as a seeded Poisson process. Their arrival span is set once per run so that
the offered load is L (4) times what lote serving one request at a time manages (measured on a
warm-up call), or S seconds: every engine is saturated, so the makespan measures serving
capacity, and the arrivals are staggered, so a static batch has to wait for its members. The
same arrival times serve every engine. Run it on an otherwise idle machine: with another
process on a core, each engine's THREADS threads wait for each other at every operation and
every figure (the calibration too) drops by an order of magnitude.

  lote      `lote serve` (fp32, then int8), THREADS threads; a Python client sends each request
            as a unary Generate call at its arrival time (one thread per request, real time).
  peers     CTranslate2 fp32 and int8 (ctranslate2.Generator, ct2_peers.py's conversions) and
            transformers fp32 (GPT2LMHeadModel.generate, left padding with an attention mask),
            in this process on THREADS threads, as static batches of B (8 and 32): requests in
            arrival order, a batch starting once its last member has arrived and the previous
            batch has finished (a simulated clock over the measured batch durations), every
            member running to the batch's longest forced length.

Figures per engine: useful tokens/s (each request's own tokens) over the makespan, first arrival
to last completion; p50 and p99 latency, completion minus arrival; for lote the mean rows per
decode step (its /metrics). Ratios: lote over the fastest static peer of its precision (the
best of every peer and B). Medians over R repeats; lote and the peers alternate.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent
if "--smoke" in sys.argv:  # before common reads it
    os.environ["LOTE_BENCH_SMOKE"] = "1"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples" / "python"))
from common import SMOKE, THREADS, shape, start_server, write_config  # noqa: E402
from ct2_peers import PRECISIONS, converted  # noqa: E402  (sets OMP_NUM_THREADS)
from generation_throughput import build_models  # noqa: E402
from grpc_load import GRPC, METRICS, batch_figures, metrics  # noqa: E402

PROMPT_WORDS = shape((8, 160), (4, 24))
NEW_TOKENS = shape((8, 128), (2, 8))
BATCH_SIZES = (8, 32)
SEED = 14
EOS = 50256


def workload(count: int) -> list[dict]:
    """The seeded requests: prompt token ids (w100 to w49999) and forced new tokens."""
    rng = random.Random(SEED)
    return [{"ids": [rng.randrange(100, 50000) for _ in range(rng.randint(*PROMPT_WORDS))],
             "new_tokens": rng.randint(*NEW_TOKENS)} for _ in range(count)]


def arrivals(count: int, span: float) -> list[float]:
    """Seeded Poisson arrivals from 0 to `span`: exponential gaps scaled to that total."""
    rng = random.Random(SEED + 1)
    gaps = [rng.expovariate(1.0) for _ in range(count - 1)]
    clock, out = 0.0, [0.0]
    for gap in gaps:
        clock += gap * span / sum(gaps)
        out.append(clock)
    return out


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def figures(requests: list[dict], arrived: list[float], done: list[float]) -> dict:
    latencies = [end - start for start, end in zip(arrived, done)]
    makespan = max(done) - min(arrived)
    return {"tokens_per_second": sum(r["new_tokens"] for r in requests) / makespan,
            "makespan_seconds": makespan, "p50_seconds": percentile(latencies, 0.5),
            "p99_seconds": percentile(latencies, 0.99)}


class LoteClient:
    """Unary Generate calls to the worker's model "gpt2", each forced to its own length."""

    def __init__(self):
        import lote_common
        import lote_stubs
        self.stubs = lote_stubs.load()
        self.channel = lote_common.channel(GRPC)
        self.inference = self.stubs.inference_pb2_grpc.InferenceStub(self.channel)

    def generate(self, request: dict) -> int:
        """The tokens the call generated."""
        pb = self.stubs.inference_pb2
        parameters = pb.GenerationParameters(max_new_tokens=request["new_tokens"], min_new_tokens=request["new_tokens"],
                                             do_sample=False, return_full_text=False)
        text = " ".join(f"w{i}" for i in request["ids"])
        response = self.inference.Generate(pb.GenerateRequest(model="gpt2", inputs=[text], parameters=parameters),
                                           timeout=3600)
        return response.results[0].sequences[0].output_tokens

    def one_stream_rate(self) -> float:
        """Tokens/s of one call at a time (whole calls, prefill included), after a warm-up call."""
        request = {"ids": list(range(100, 132)), "new_tokens": NEW_TOKENS[1] // 2}
        self.generate(request)
        start = time.perf_counter()
        tokens = self.generate(request)
        return tokens / (time.perf_counter() - start)

    def replay(self, requests: list[dict], times: list[float]) -> dict:
        """Every request sent at its arrival time; figures from the client's clock."""
        done = [0.0] * len(requests)
        errors = []
        origin = time.perf_counter() + 0.2

        def send(i: int) -> None:
            time.sleep(max(0.0, origin + times[i] - time.perf_counter()))
            try:
                tokens = self.generate(requests[i])
                assert tokens == requests[i]["new_tokens"], (i, tokens, requests[i]["new_tokens"])
            except Exception as error:  # noqa: BLE001 (re-raised below, on the main thread)
                errors.append(error)
            done[i] = time.perf_counter() - origin

        before = metrics()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        rows = batch_figures(before, metrics(), "gpt2")["mean_batch_size"]
        return figures(requests, times, done) | {"mean_decode_rows": rows}


def static_replay(run_batch, requests: list[dict], times: list[float], size: int) -> dict:
    """Static batches of `size` in arrival order on a simulated clock: a batch starts when its
    last member has arrived and the previous batch is done, and lasts its measured duration;
    `run_batch(batch, new_tokens)` runs every member to the batch's longest forced length."""
    clock, done = 0.0, []
    for first in range(0, len(requests), size):
        batch = requests[first:first + size]
        longest = max(r["new_tokens"] for r in batch)
        start = time.perf_counter()
        run_batch(batch, longest)
        clock = max(clock, times[first + len(batch) - 1]) + time.perf_counter() - start
        done += [clock] * len(batch)
    return figures(requests, times, done) | {"batch_size": size}


def ct2_runner(gpt2_dir: Path, precision: str):
    import ctranslate2
    generator = ctranslate2.Generator(str(converted("gpt2-small", gpt2_dir, precision)), device="cpu",
                                      compute_type=PRECISIONS[precision][1], intra_threads=THREADS, inter_threads=1)

    def run_batch(batch: list[dict], new_tokens: int) -> None:
        out = generator.generate_batch([[f"w{i}" for i in r["ids"]] for r in batch], max_length=new_tokens,
                                       min_length=new_tokens, sampling_topk=1, beam_size=1,
                                       include_prompt_in_result=False)
        assert all(len(r.sequences[0]) == new_tokens for r in out), [len(r.sequences[0]) for r in out]
    return run_batch


def transformers_runner(gpt2_dir: Path):
    import torch
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()

    def run_batch(batch: list[dict], new_tokens: int) -> None:
        width = max(len(r["ids"]) for r in batch)
        ids = torch.tensor([[EOS] * (width - len(r["ids"])) + r["ids"] for r in batch])
        mask = torch.tensor([[0] * (width - len(r["ids"])) + [1] * len(r["ids"]) for r in batch])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=False, pad_token_id=EOS,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        assert out.shape[1] == width + new_tokens, out.shape
    return run_batch


def summary(name: str, e: dict) -> str:
    return (f"{name:22} {e['tokens_per_second']:7.1f} tokens/s  makespan {e['makespan_seconds']:6.1f} s  "
            f"p50 {e['p50_seconds']:6.2f} s  p99 {e['p99_seconds']:6.2f} s")


def record(runs: dict, name: str, figures: dict) -> None:
    """Keeps one repeat's figures of an engine and says them on stderr as they come."""
    runs.setdefault(name, []).append(figures)
    print(summary(name, figures), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--repeats", type=int, default=1 if SMOKE else 3)
    parser.add_argument("--requests", type=int, default=6 if SMOKE else 48)
    parser.add_argument("--load", type=float, default=4.0,
                        help="offered load, in multiples of what one-at-a-time lote serves")
    parser.add_argument("--span", type=float, help="arrival span in seconds instead of the one derived from --load")
    parser.add_argument("--smoke", action="store_true", help="tiny model, few requests (LOTE_BENCH_SMOKE=1)")
    args = parser.parse_args()
    import ctranslate2
    import torch
    torch.set_num_threads(THREADS)
    gpt2_dir, _ = build_models()
    for precision in PRECISIONS:
        converted("gpt2-small", gpt2_dir, precision)
    requests = workload(args.requests)
    useful = sum(r["new_tokens"] for r in requests)
    config = write_config(Path(tempfile.mkdtemp()) / "lote.toml", GRPC, METRICS, [("gpt2", "text-generation", gpt2_dir)])
    runs = {}  # engine -> one figures dict per repeat
    times, one_stream = None, {}
    for precision in PRECISIONS:
        peers = {f"ct2_{precision}": ct2_runner(gpt2_dir, precision)}
        if precision == "fp32":
            peers["transformers_fp32"] = transformers_runner(gpt2_dir)
        for run_batch in peers.values():  # warm-up
            run_batch(requests[:1], 1)
        server = start_server(args.binary, config, "gpt2", device__dtype=precision)
        try:
            client = LoteClient()
            one_stream[precision] = client.one_stream_rate()
            if times is None:  # the arrival span: fp32's one-at-a-time time over the load
                span = args.span or useful / one_stream[precision] / args.load
                times = arrivals(len(requests), span)
                print(f"one stream {one_stream[precision]:.1f} tokens/s: arrivals over {span:.1f} s",
                      file=sys.stderr, flush=True)
            for _ in range(args.repeats):
                record(runs, f"lote_{precision}", client.replay(requests, times))
                for name, run_batch in peers.items():
                    for size in BATCH_SIZES:
                        record(runs, f"{name}_b{size}", static_replay(run_batch, requests, times, size))
            client.channel.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
        del peers
    engines = {name: {key: statistics.median(r[key] for r in repeats) for key in repeats[0]}
               for name, repeats in runs.items()}
    report = {"threads": THREADS, "requests": len(requests), "useful_tokens": useful,
              "prompt_tokens": PROMPT_WORDS, "new_tokens": NEW_TOKENS, "batch_sizes": BATCH_SIZES,
              "load": args.load, "one_stream_tokens_per_second": one_stream, "arrival_span_seconds": span,
              "engines": engines, "versions": {"ctranslate2": ctranslate2.__version__, "torch": torch.__version__}}
    for precision in PRECISIONS:
        static = [name for name in engines if not name.startswith("lote") and precision in name]
        best = max(static, key=lambda name: engines[name]["tokens_per_second"])
        ours, theirs = engines[f"lote_{precision}"], engines[best]
        report[precision] = {"fastest_static": best,
                             "ratio_lote_over_fastest_static": ours["tokens_per_second"] / theirs["tokens_per_second"],
                             "p50_ratio_lote_over_fastest_static": ours["p50_seconds"] / theirs["p50_seconds"]}
    print(f"{len(requests)} requests, {useful} useful tokens, arrivals over {span:.1f} s "
          f"(load {args.load:g}x one fp32 stream at {one_stream['fp32']:.1f} tokens/s)")
    for name, e in engines.items():
        print(summary(name, e))
    for precision in PRECISIONS:
        r = report[precision]
        print(f"{precision}: lote / {r['fastest_static']} = {r['ratio_lote_over_fastest_static']:.2f} (target 2.0)")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
