"""`make bench`: every workload through lote and through its Python peer on this machine, with
the same threads, weights and inputs; medians of alternating runs; ratios lote / peer.

Usage: python bench/harness.py --target TARGET_DIR [--repeats R] [--seconds S] [--resume]
       python bench/harness.py --smoke --target TARGET_DIR --profile debug --results DIR

--smoke (run by `make test`, tests/it/bench_smoke.rs) runs every workload end to end on tiny random
models with a few inputs, one repeat and short loads, writing into --results: it proves the
scripts still work against the current binary; its figures mean nothing.

Runs, each as its own script (so each can also be run alone):
  encoder_throughput.py    embeddings, real all-MiniLM-L6-v2, fp32 and bf16, vs sentence-transformers
                           and the transformers feature-extraction pipeline
  encoder_tasks.py         QA and fill-mask, BERT-base shape, fp32 and bf16, vs the pipelines
  matmul_peak.py           this CPU's fp32 and bf16 matmul peak (the efficiency yardstick)
  memory_bandwidth.py      this CPU's memory bandwidth (the decode yardstick: a step's bytes of
                           weights and caches over it is the step's bound)
  generation_throughput.py GPT-2 small (1, 8, 32 sequences) and DistilBART 4-beam summaries (1 and
                           8 documents), fp32, bf16 and int8, vs transformers' generate with static
                           batches
  ct2_peers.py             the CPU-speed peers on the same workloads: CTranslate2 fp32 and int8
                           (GPT-2, DistilBART, the MiniLM encoder), ONNX Runtime fp32 and int8 via
                           sentence-transformers' onnx backend
  grpc_load.py             gRPC load from a separate process: embeddings and generation at several
                           rates, 1/8/32 concurrent streams, trivial calls (transport ceiling)
  mixed_generation.py      GPT-2 requests of mixed prompt and output lengths arriving staggered:
                           gRPC continuous batching (fp32, int8) vs static batches in CTranslate2
                           and transformers
  jobs_transport           RabbitMQ documents/s with an echo model at prefetch 1, 32, 256
  memory.py                peak RSS beside each Python peer; RSS over a long serving run
Writes bench/results/latest.json, latest.md (with each issue-7 target and whether it was met),
throughput.png (ratios) and latency.png.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from memory import rss_growth  # noqa: E402
RESULTS = HERE / "results"  # --results replaces it


def run(command: list[str]) -> str:
    """A workload's stdout; its stderr's end when it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout


def run_json(command: list[str]) -> dict:
    """Runs a script that prints one JSON document (possibly after other lines)."""
    out = run(command)
    start = out.index("{")
    return json.loads(out[start:])


def run_json_lines(command: list[str]) -> list[dict]:
    out = run(command)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import torch
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads_used": 2,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def rows(results: dict) -> list[tuple]:
    """(workload, lote, peer, ratio or share, target, met) for the table; None where empty."""
    out = []

    def add(workload, lote, peer=None, ratio=None, target=None, at_least=True):
        met = None if ratio is None or target is None else (ratio >= target if at_least else ratio <= target)
        out.append((workload, lote, peer, ratio, target, met, at_least))

    emb = results["embeddings"]
    for dtype, key in (("fp32", "tokens_per_second"), ("bf16", "tokens_per_second_bf16")):
        t = emb[key]
        add(f"embeddings {dtype}, tokens/s vs sentence-transformers (best batch)", t["lote"],
            t["sentence-transformers"], t["lote"] / t["sentence-transformers"], 1.5)
    t = emb["tokens_per_second"]
    add("embeddings fp32, tokens/s vs transformers pipeline", t["lote"], t["transformers-pipeline"],
        t["lote"] / t["transformers-pipeline"], 1.5)
    tasks = results["encoder_tasks"]
    for task, label in (("question_answering", "QA"), ("fill_mask", "fill-mask")):
        for dtype in ("fp32", "bf16"):
            r = tasks[task][dtype]
            add(f"{label} BERT-base {dtype}, tokens/s vs pipeline (best batch)", r["lote"], r["pipeline"],
                r["ratio_lote_over_pipeline"], 1.5)
    gen = results["generation"]
    summarizers = [(key, label) for key, label in (("distilbart", "DistilBART"), ("t5", "T5-small"))
                   if f"{key}_fp32_seconds_per_document_4_beams" in gen]  # runs before T5 was added lack it
    for key, label in summarizers:
        for dtype in ("fp32", "bf16"):
            d = gen[f"{key}_{dtype}_seconds_per_document_4_beams"]
            add(f"{label} {dtype} 4 beams, documents/s over the decode steps vs generate", 1 / d["lote"],
                1 / d["transformers"], d["speedup_lote_over_transformers"], 1.5)
    for dtype in ("fp32", "bf16"):
        for n in (1, 8, 32):
            g = gen[f"gpt2_{dtype}_tokens_per_second_{n}_seq"]
            add(f"GPT-2 {dtype} `lote run` {n} sequence(s), decode tokens/s vs generate batch {n}", g["lote"],
                g["transformers"], g["ratio_lote_over_transformers"])
    # Decode against the memory-bandwidth bound: a step's bytes of weights and caches over the
    # bandwidth this machine reaches (runs before memory_bandwidth.py have neither).
    bandwidth = results.get("memory_bandwidth", {}).get("bound_gb_per_second")
    for dtype in ("fp32", "bf16", "int8") if bandwidth else ():
        for n in (1, 8, 32):
            g = gen[f"gpt2_{dtype}_tokens_per_second_{n}_seq"]
            step = g["decode_bytes_per_step"]
            bound = n * bandwidth * 1e9 / (step["weights"] + step["self_cache"])
            add(f"GPT-2 {dtype} {n} sequence(s), decode tokens/s vs the memory-bandwidth bound", g["lote"],
                bound, g["lote"] / bound, 0.77 if n == 1 else None)  # within 1.3x of the bound
        for key, label in summarizers:
            d = gen[f"{key}_{dtype}_seconds_per_document_4_beams"]
            step = d["decode_bytes_per_step"]
            bound_seconds = 63 * (step["weights"] + step["self_cache"] + step["cross_cache_shared"]) / (bandwidth * 1e9)
            add(f"{label} {dtype} 4 beams, documents/s vs the memory-bandwidth bound (cross-attention shared by beams)",
                1 / d["lote"], 1 / bound_seconds, bound_seconds / d["lote"])
    # The CPU-speed peers (ct2_peers.py): CTranslate2 fp32 and int8, ONNX Runtime for embeddings;
    # each lote figure over the fastest peer of its precision class (issue 14's targets: 1.3x).
    peers = results.get("ct2_peers")
    if peers:
        tps = peers["embeddings_tokens_per_second"]
        for dtype, key, names in (("fp32", "tokens_per_second", ("ct2_fp32", "onnx_fp32")),
                                  ("int8", "tokens_per_second_int8", ("ct2_int8", "onnx_int8"))):
            fastest = max(names, key=lambda name: tps[name])
            add(f"embeddings {dtype}, tokens/s vs the fastest of CTranslate2 and ONNX Runtime ({fastest})",
                emb[key]["lote"], tps[fastest], emb[key]["lote"] / tps[fastest], 1.3)
        for dtype in ("fp32", "int8"):
            for key, label in summarizers:
                for documents in ("1", "8"):
                    suffix = "" if documents == "1" else "_8_documents"
                    ours = 1 / gen[f"{key}_{dtype}_seconds_per_document_4_beams{suffix}"]["lote"]
                    theirs = peers[f"{key}_documents_per_second"][dtype][documents]
                    add(f"{label} {dtype} 4 beams, {documents} document(s), documents/s vs CTranslate2 {dtype}",
                        ours, theirs, ours / theirs, 1.3)
            for n in ("1", "8", "32"):
                ours = gen[f"gpt2_{dtype}_tokens_per_second_{n}_seq"]["lote"]
                theirs = peers["gpt2"][dtype][n]
                add(f"GPT-2 {dtype} {n} sequence(s), decode tokens/s vs CTranslate2 {dtype}", ours, theirs,
                    ours / theirs, 1.3)
    # Runs before the bf16 streams were added have fp32 stream rows without a dtype.
    streams = {(r.get("dtype", "fp32"), r["concurrency"]): r
               for r in results["grpc_load"] if "streams" in r["scenario"]}
    for (dtype, n), row in sorted(streams.items(), key=lambda item: (item[0][0] != "fp32", item[0][1])):
        static = gen[f"gpt2_{dtype}_tokens_per_second_{n}_seq"]["transformers"]
        add(f"GPT-2 {dtype} gRPC {n} concurrent stream(s), tokens/s (whole calls) vs generate static batch {n}",
            row["tokens_per_second"], static, row["tokens_per_second"] / static, 2.0 if n == 32 else None)
    # Mixed lengths, staggered arrivals (mixed_generation.py): lote over the fastest static batch.
    mixed = results.get("mixed_generation")
    for dtype in ("fp32", "int8") if mixed else ():
        fastest = mixed[dtype]["fastest_static"]
        ours, theirs = mixed["engines"][f"lote_{dtype}"], mixed["engines"][fastest]
        add(f"GPT-2 {dtype} mixed lengths, staggered arrivals, useful tokens/s, gRPC continuous batching vs "
            f"the fastest static batch ({fastest})", ours["tokens_per_second"], theirs["tokens_per_second"],
            mixed[dtype]["ratio_lote_over_fastest_static"], 2.0)
        add(f"GPT-2 {dtype} mixed lengths, staggered arrivals, p99 latency s vs {fastest}", ours["p99_seconds"],
            theirs["p99_seconds"], ours["p99_seconds"] / theirs["p99_seconds"], at_least=False)
    add("embeddings padding efficiency (real / computed tokens)", None, None, emb["lote_padding_efficiency"], 0.9)
    peak = results["matmul_peak"]
    for label, e in (("all-MiniLM-L6-v2", emb["efficiency"]["fp32"]),
                     ("BERT-base QA", tasks["question_answering"]["fp32"]["efficiency"]),
                     ("BERT-base fill-mask", tasks["fill_mask"]["fp32"]["efficiency"])):
        add(f"{label} fp32 GFLOP/s in the model vs measured matmul peak", e["model_gflops_per_second"],
            peak["fp32"]["peak_gflops_per_second"], e["model_gflops_per_second"] / peak["fp32"]["peak_gflops_per_second"], 0.5)
    add("tokenization's share of lote's CPU time (embeddings)", None, None,
        emb["efficiency"]["fp32"]["tokenize_share_of_cpu"])
    tokenize = next(r for r in results["grpc_load"] if r["kind"] == "tokenize")
    add("gRPC trivial calls/s (Tokenize, 64 callers)", tokenize["calls_per_second"], None,
        tokenize["calls_per_second"] / 20000, 1.0)
    best_transport = max(results["jobs_transport"], key=lambda r: r["documents_per_second"])
    add(f"RabbitMQ documents/s end to end, echo model (prefetch {best_transport['prefetch']}, "
        f"{best_transport['store']})", best_transport["documents_per_second"], None,
        best_transport["documents_per_second"] / 5000, 1.0)
    for name, m in results["memory"]["peak_rss"].items():
        add(f"peak RSS MiB, {name}, vs the Python peer's process", m["lote_mib"], m["python_mib"],
            m["ratio_lote_over_python"], 1.0, at_least=False)
    serving = results["memory"]["serving"]
    growth = rss_growth(serving["rss_mib_after_each_round"])
    add(f"RSS growth MiB over the last {growth['rounds_in_second_half']} of {serving['rounds']} serving rounds "
        f"({serving['calls']} calls; {growth['warm_rss_mib']:.0f} MiB warm)", growth["growth_mib_second_half"])
    return out


def table(results: dict) -> str:
    def number(value):
        if value is None:
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"

    lines = ["| workload | lote | peer | ratio / share | target | met |",
             "| --- | ---: | ---: | ---: | ---: | :---: |"]
    for workload, lote, peer, ratio, target, met, at_least in rows(results):
        goal = "-" if target is None else f"{'>=' if at_least else '<='} {target}"
        verdict = "-" if met is None else ("yes" if met else "**no**")
        ratio_text = "-" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {workload} | {number(lote)} | {number(peer)} | {ratio_text} | {goal} | {verdict} |")
    drift = results["generation"]["bf16_same_tokens_as_fp32"]
    emb_drift = results["embeddings"]["bf16_min_cosine_to_fp32"]
    tasks = results["encoder_tasks"]
    lines += ["", "bf16 drift from fp32 (lote / peer): embeddings min cosine "
              f"{emb_drift['lote']:.4f} / {emb_drift['sentence-transformers']:.4f}; QA same answer "
              f"{tasks['question_answering']['bf16_drift']['same_share']:.2f} (lote); fill-mask same top-1 "
              f"{tasks['fill_mask']['bf16_drift']['same_share']:.2f} (lote); GPT-2 same tokens "
              f"{drift['gpt2_lote']:.2f} / {drift['gpt2_transformers']:.2f}; DistilBART same tokens "
              f"{drift['distilbart_lote']:.2f} / {drift['distilbart_transformers']:.2f}; T5-small same tokens "
              f"{drift.get('t5_lote', float('nan')):.2f} / {drift.get('t5_transformers', float('nan')):.2f}. "
              f"Matmul peak on {results['matmul_peak']['threads']} threads: fp32 "
              f"{results['matmul_peak']['fp32']['peak_gflops_per_second']:.0f} GFLOP/s, bf16 "
              f"{results['matmul_peak']['bf16']['peak_gflops_per_second']:.0f} GFLOP/s."]
    int8 = results["generation"].get("int8_same_tokens_as_fp32")
    peers = results.get("ct2_peers")
    if int8 and peers:
        cosine = results["embeddings"]["int8_min_cosine_to_torch_fp32"]["lote"]
        peer_cosine = peers["embeddings_min_cosine_to_torch"]
        ct2_same = peers["int8_same_tokens_as_fp32"]
        lines += ["", "int8 drift from fp32 (lote / CTranslate2 int8 / ONNX int8): embeddings min cosine to "
                  f"sentence-transformers fp32 {cosine:.4f} / {peer_cosine['ct2_int8']:.4f} / "
                  f"{peer_cosine['onnx_int8']:.4f}; QA same answer "
                  f"{tasks['question_answering']['int8_drift']['same_share']:.2f} (lote); fill-mask same top-1 "
                  f"{tasks['fill_mask']['int8_drift']['same_share']:.2f} (lote); GPT-2 same tokens "
                  f"{int8['gpt2_lote']:.2f} / {ct2_same['gpt2']:.2f}; DistilBART same tokens "
                  f"{int8['distilbart_lote']:.2f} / {ct2_same['distilbart']:.2f}; T5-small same tokens "
                  f"{int8.get('t5_lote', float('nan')):.2f} / {ct2_same.get('t5', float('nan')):.2f}."]
    return "\n".join(lines)


def charts(results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Throughput ratios only: not the efficiency shares (peer = the matmul peak) nor memory.
    compared = [r for r in rows(results)
                if r[2] is not None and r[3] is not None and r[6]
                and "matmul peak" not in r[0] and "bandwidth bound" not in r[0]]
    fig, axis = plt.subplots(figsize=(10, 0.38 * len(compared) + 1.2))
    labels = [r[0].replace(", tokens/s", "").replace(", documents/s", "") for r in compared]
    ratios = [r[3] for r in compared]
    colors = ["#2ca02c" if r[5] or (r[5] is None and r[3] >= 1) else "#d62728" for r in compared]
    axis.barh(range(len(compared)), ratios, color=colors)
    axis.set_yticks(range(len(compared)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.axvline(1.5, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xlabel("throughput ratio lote / Python peer (higher is better; dashed: 1.5x target)")
    axis.set_title("lote beside the Python peers (same machine, 2 threads)")
    fig.tight_layout()
    fig.savefig(RESULTS / "throughput.png", dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(7, 4))
    open_loop = [r for r in results["grpc_load"] if r["kind"] == "embed" and r["rate"]]
    open_loop.sort(key=lambda r: r["rate"])
    axis.plot([r["calls_per_second"] for r in open_loop], [r["p50_ms"] for r in open_loop], "o-", label="p50")
    axis.plot([r["calls_per_second"] for r in open_loop], [r["p99_ms"] for r in open_loop], "o-", label="p99")
    axis.set_xlabel("Embed calls/s served (open loop)")
    axis.set_ylabel("latency, ms")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("gRPC Embed latency vs load (all-MiniLM-L6-v2)")
    fig.tight_layout()
    fig.savefig(RESULTS / "latency.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="the cargo target dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--lines", type=int, default=800, help="embedding corpus lines")
    parser.add_argument("--resume", action="store_true",
                        help="keep the workloads an interrupted run finished (results/partial.json)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite latest.md and the charts from latest.json")
    parser.add_argument("--profile", default="release", help="the cargo profile whose binaries run")
    parser.add_argument("--results", type=Path, help="where to write (default bench/results)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny models, few inputs, short loads: checks the scripts, not speed")
    options = parser.parse_args()
    global RESULTS
    RESULTS = options.results or RESULTS
    if options.render:
        render(json.loads((RESULTS / "latest.json").read_text()))
        return
    smoke = options.smoke
    if smoke:
        # The children read it (common.SMOKE) to build and use the tiny models.
        os.environ["LOTE_BENCH_SMOKE"] = "1"
        options.repeats, options.seconds, options.lines = 1, 0.5, 16
    built = Path(options.target) / options.profile
    lote, load, transport = built / "lote", built / "examples/load", built / "examples/jobs_transport"
    missing = [str(path) for path in (lote, load, transport) if not path.is_file()]
    if missing:
        release = "" if options.profile == "debug" else f" --profile {options.profile}"
        raise SystemExit(f"harness: {', '.join(missing)} missing: build them with "
                         f"`cargo build{release} --bin lote --examples` (make test and make bench do)")
    python = sys.executable
    RESULTS.mkdir(exist_ok=True)
    partial = RESULTS / "partial.json"
    results = json.loads(partial.read_text()) if options.resume and partial.exists() else {}
    results["machine"] = machine()

    def section(name: str, measure) -> None:
        """Runs one workload unless a resumed run already has it; keeps what is done so far."""
        if name in results:
            print(f"{name}: kept from the interrupted run", flush=True)
            return
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        results[name] = measure()
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        partial.write_text(json.dumps(results, indent=2))

    def grpc_load() -> list:
        with tempfile.TemporaryDirectory() as work:
            rows = Path(work) / "rows.json"
            run([python, str(HERE / "grpc_load.py"), str(lote), str(load),
                 "--seconds", str(options.seconds), "--json", str(rows)])
            return json.loads(rows.read_text())

    repeats = ["--repeats", str(options.repeats)]
    # In a smoke run: fewer inputs and shorter loads where a script's defaults are sized for speed.
    few = lambda *args: list(args) if smoke else []  # noqa: E731
    section("embeddings", lambda: run_json([python, str(HERE / "encoder_throughput.py"), str(lote), *repeats,
                                            "--lines", str(options.lines)]))
    section("encoder_tasks", lambda: run_json([python, str(HERE / "encoder_tasks.py"), str(lote), *repeats,
                                               *few("--qa", "4", "--masks", "8")]))
    section("matmul_peak", lambda: run_json([python, str(HERE / "matmul_peak.py"), *few("--seconds", "0.1")]))
    section("memory_bandwidth", lambda: run_json([python, str(HERE / "memory_bandwidth.py"),
                                                  *few("--seconds", "0.1")]))
    section("generation", lambda: run_json([python, str(HERE / "generation_throughput.py"), str(lote), *repeats]))
    section("ct2_peers", lambda: run_json([python, str(HERE / "ct2_peers.py"), *repeats,
                                           "--lines", str(options.lines)]))
    section("grpc_load", grpc_load)
    section("mixed_generation", lambda: run_json([python, str(HERE / "mixed_generation.py"), str(lote), *repeats]))
    documents = "200" if smoke else "3000"
    section("jobs_transport", lambda: run_json_lines([str(transport), "--documents", documents]))
    section("memory", lambda: run_json([python, str(HERE / "memory.py"), str(lote), str(load),
                                        *few("--rounds", "2", "--seconds", "0.5")]))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    render(results)
    partial.unlink(missing_ok=True)


def render(results: dict) -> None:
    """latest.md and the charts from one run's results."""
    m = results["machine"]
    markdown = (f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['threads_used']} threads "
                f"for each side), torch {m['torch']}.\n\n" + table(results) + "\n")
    (RESULTS / "latest.md").write_text(markdown)
    charts(results)
    print(markdown)


if __name__ == "__main__":
    main()
