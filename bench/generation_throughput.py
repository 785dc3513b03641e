"""Generation speed of `lote run` beside transformers' `generate`, same 2 threads, same weights.

Usage: python bench/generation_throughput.py LOTE_BINARY [--repeats R]

Builds (once, cached in ~/.cache/lote-bench) three random-weight models of real shapes:
GPT-2 small (124M), DistilBART-CNN-12-6 (306M) and T5-small (60M), each with a word-level
tokenizer of the same vocabulary size, then measures, in fp32, bf16 and int8 (lote only),
  1. GPT-2 greedy decode tokens/s with 1, 8 and 32 sequences (transformers: static batches of
     that size), 64 new tokens each (forced length), from the same 32-token prompt;
  2. DistilBART and T5 decode seconds per document, 4 beams, 64 output tokens (forced length),
     with 1 and with 8 documents (of 402 tokens);
  3. bf16's and int8's drift: the share of generated tokens equal to the fp32 run's;
  4. the bytes each decode step has to read (weights and caches), for the bandwidth bound.
Both sides are timed over the 63 decode steps after the first token: a full run minus a
one-token run of the same inputs (for lote whole `lote run` processes, so start-up, model load
and the prefill cancel; for transformers two generate calls on the loaded model).
Reports medians and ratios (above 1 means lote is faster).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CACHE, GENERATION_PROMPT, THREADS, lote_outputs, run_lote, shape  # noqa: E402

# lote runs in each; transformers has no int8 (the int8 peer, CTranslate2, is in ct2_peers.py).
LOTE_DTYPES = ("fp32", "bf16", "int8")


def word_tokenizer(vocab_size: int, specials: dict):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(vocab_size)}
    for token, index in specials.items():
        vocab.pop(f"w{index}", None)
        vocab[token] = index
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def build_models():
    import torch
    from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel,
                              PreTrainedTokenizerFast)
    torch.manual_seed(0)
    gpt2_dir, bart_dir = CACHE / "gpt2-small", CACHE / "distilbart-cnn-12-6"
    if not (gpt2_dir / "model.safetensors").exists():
        # GPT2Config's defaults are GPT-2 small.
        model = GPT2LMHeadModel(GPT2Config(**shape({}, dict(n_embd=64, n_layer=2, n_head=2)))).eval()
        model.save_pretrained(gpt2_dir, safe_serialization=True)
        tok = PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(50257, {"<|endoftext|>": 50256, "<unk>": 0}),
                                      eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<unk>")
        tok.save_pretrained(gpt2_dir)
    if not (bart_dir / "model.safetensors").exists():
        sizes = shape(dict(d_model=1024, encoder_layers=12, decoder_layers=6, encoder_attention_heads=16,
                           decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096),
                      dict(d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128))
        config = BartConfig(vocab_size=50264, max_position_embeddings=1024, forced_bos_token_id=0,
                            forced_eos_token_id=2, decoder_start_token_id=2, **sizes)
        model = BartForConditionalGeneration(config).eval()
        model.save_pretrained(bart_dir, safe_serialization=True)
        specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        tok = PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(50264, specials), bos_token="<s>",
                                      eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
        tok.save_pretrained(bart_dir)
    return gpt2_dir, bart_dir


def build_t5() -> Path:
    """T5-small's shapes (T5Config's defaults), its vocabulary size, a word-level tokenizer that
    ends each input with </s> as T5's own does."""
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
    t5_dir = CACHE / "t5-small"
    if not (t5_dir / "model.safetensors").exists():
        torch.manual_seed(0)
        sizes = shape({}, dict(d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2))
        # decoder_start_token_id as t5-small's config.json has it (T5Config leaves it unset).
        model = T5ForConditionalGeneration(T5Config(vocab_size=32128, decoder_start_token_id=0, **sizes)).eval()
        model.save_pretrained(t5_dir, safe_serialization=True)
        specials = {"<pad>": 0, "</s>": 1, "<unk>": 2}
        words = word_tokenizer(32128, specials)
        words.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        tok = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
        tok.save_pretrained(t5_dir)
    return t5_dir


# The summarization input, 400 words, and its ids as each seq2seq model's tokenizer gives them
# (BART: <s> ... </s>; T5: ... </s>, inside T5's smaller vocabulary).
DOCUMENT_WORDS = {"distilbart": [1000 + (i * 37) % 40000 for i in range(400)],
                  "t5": [1000 + (i * 37) % 30000 for i in range(400)]}
DOCUMENT_IDS = {"distilbart": [0] + DOCUMENT_WORDS["distilbart"] + [2], "t5": DOCUMENT_WORDS["t5"] + [1]}


def decode_bytes(model, rows: int, context: float, source: int = 0, beams: int = 1, int8: bool = False) -> dict:
    """Bytes one decode step has to read at `rows` rows: each weight it uses once (the token
    embedding only as the LM head; not the position table, the encoder, nor the cross-attention
    key and value projections, whose outputs are cached) and the caches: self-attention keys
    and values of `context` past positions per row, cross-attention ones of `source` positions,
    stored per row (as lote and transformers keep them) or once per input (shared by its beams).
    The decode bound of a step is these bytes over memory_bandwidth.py's bandwidth. With `int8`,
    matrices (the linear layers and the LM head) take a byte an element, the rest and the caches
    stay in the model's dtype (fp32), as lote's int8 keeps them."""
    element = next(model.parameters()).element_size()
    skip = ("wpe.", "embed_positions", "encoder_attn.k_proj", "encoder_attn.v_proj", "model.encoder.",
            "EncDecAttention.k.", "EncDecAttention.v.", "encoder.block.", "encoder.final_layer_norm")
    used = [p for name, p in model.named_parameters() if not any(s in name for s in skip)]
    weights = sum(p.numel() * (1 if int8 and p.dim() == 2 else element) for p in used) // element
    config = model.config
    layers = getattr(config, "n_layer", None) or getattr(config, "decoder_layers", None) or config.num_decoder_layers
    # Keys and values are heads x head width: d_model for GPT-2 and BART, num_heads x d_kv for T5.
    width = getattr(config, "n_embd", None) or (config.num_heads * config.d_kv if config.model_type == "t5"
                                                else config.d_model)
    per_position = 2 * layers * width * element  # a key and a value in every layer
    cross = per_position * source
    return {"weights": weights * element, "self_cache": per_position * context * rows,
            "cross_cache_per_row": cross * rows, "cross_cache_shared": cross * rows // beams}


def lote_generate(binary, model_dir, task, texts, params, batch, work, dtype="fp32"):
    """Wall seconds of a `lote run`, and its generated texts."""
    run = run_lote(binary, model_dir, task, [{"text": t, "params": params} for t in texts], work,
                   batching__max_batch_size=str(batch), device__dtype=dtype)
    key = "summary_text" if task == "summarization" else "generated_text"
    return run.measured.seconds, [line[key] for line in lote_outputs(work)]


def same_tokens(a: list, b: list) -> float:
    """Share of the last 64 generated words (or ids) that equal the fp32 run's, position by position."""
    words = lambda text: str(text).split()[-64:]  # noqa: E731
    pairs = [(x, y) for ta, tb in zip(a, b) for x, y in zip(words(ta), words(tb))]
    return sum(x == y for x, y in pairs) / max(len(pairs), 1)


def hf_generate(model, ids, **params):
    import torch
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **params)
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    from transformers import BartForConditionalGeneration, GPT2LMHeadModel, T5ForConditionalGeneration
    gpt2_dir, bart_dir = build_models()
    seq2seq = {"distilbart": (bart_dir, BartForConditionalGeneration),  # report name: model, class
               "t5": (build_t5(), T5ForConditionalGeneration)}
    models = {"gpt2": {dtype: GPT2LMHeadModel.from_pretrained(gpt2_dir, dtype=kind).eval()
                       for dtype, kind in (("fp32", torch.float32), ("bf16", torch.bfloat16))}}
    for name, (model_dir, cls) in seq2seq.items():
        models[name] = {dtype: cls.from_pretrained(model_dir, dtype=kind).eval()
                        for dtype, kind in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    fixed = {"max_new_tokens": 64, "min_new_tokens": 64}
    report = {"threads": THREADS, "new_tokens": 64}
    one = {"max_new_tokens": 1, "min_new_tokens": 1}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def lote_decode(model_dir, task, texts, params, batch, dtype):
            """Seconds of the 63 steps after the first token: a full run minus a one-token run
            of the same inputs (start-up, load and prefill cancel), and the full run's texts."""
            full, texts_out = lote_generate(args.binary, model_dir, task, texts, params, batch, work, dtype)
            first, _ = lote_generate(args.binary, model_dir, task, texts, dict(params, **one), batch, work, dtype)
            return full - first, texts_out

        def hf_decode(model, ids, **params):
            """The same difference for transformers' generate."""
            full, out = hf_generate(model, ids, **params)
            first, _ = hf_generate(model, ids, **dict(params, **one))
            return full - first, out

        for dtype in LOTE_DTYPES:
            peers = {name: models[name].get(dtype) for name in models}  # None: no int8 in transformers
            for sequences in (1, 8, 32):
                ids = torch.tensor([[100 + i for i in range(32)]] * sequences)
                ours, theirs = [], []
                for _ in range(args.repeats):
                    seconds, texts = lote_decode(gpt2_dir, "text-generation", [GENERATION_PROMPT] * sequences,
                                                 fixed, sequences, dtype)
                    ours.append(seconds)
                    if peers["gpt2"] is not None:
                        seconds, out = hf_decode(peers["gpt2"], ids, do_sample=False, pad_token_id=50256, **fixed)
                        theirs.append(seconds)
                tokens = 63 * sequences
                rate_ours = tokens / statistics.median(ours)
                # The timed steps attend to the 32 prompt positions plus 1 to 63 new ones.
                entry = {"lote": rate_ours,
                         "decode_bytes_per_step": decode_bytes(peers["gpt2"] or models["gpt2"]["fp32"], sequences, 32 + 32,
                                                               int8=dtype == "int8")}
                if theirs:
                    rate_theirs = tokens / statistics.median(theirs)
                    entry.update(transformers=rate_theirs, ratio_lote_over_transformers=rate_ours / rate_theirs)
                if sequences == 8:
                    entry["lote_text"] = texts[0]
                    if theirs:
                        entry["transformers_ids"] = out[0, 32:].tolist()
                report[f"gpt2_{dtype}_tokens_per_second_{sequences}_seq"] = entry
            beams = dict(fixed, num_beams=4)
            for name, (model_dir, _) in seq2seq.items():
                document = " ".join(f"w{i}" for i in DOCUMENT_WORDS[name])
                for documents in (1, 8):
                    doc_ids = torch.tensor([DOCUMENT_IDS[name]] * documents)
                    ours, theirs = [], []
                    for _ in range(args.repeats):
                        seconds, texts = lote_decode(model_dir, "summarization", [document] * documents, beams,
                                                     documents, dtype)
                        ours.append(seconds / documents)
                        if peers[name] is not None:
                            seconds, out = hf_decode(peers[name], doc_ids, **beams)
                            theirs.append(seconds / documents)
                    entry = {"lote": statistics.median(ours), "lote_text": texts[0],
                             # 4 beam rows a document over its positions; the decoder's own past is 1 to 63.
                             "decode_bytes_per_step": decode_bytes(peers[name] or models[name]["fp32"], 4 * documents,
                                                                   32, doc_ids.shape[1], 4, int8=dtype == "int8")}
                    if theirs:
                        entry.update(transformers=statistics.median(theirs),
                                     speedup_lote_over_transformers=statistics.median(theirs) / statistics.median(ours),
                                     transformers_ids=out[0].tolist())
                    suffix = "" if documents == 1 else f"_{documents}_documents"
                    report[f"{name}_{dtype}_seconds_per_document_4_beams{suffix}"] = entry
    gpt2 = {dtype: report[f"gpt2_{dtype}_tokens_per_second_8_seq"] for dtype in LOTE_DTYPES}
    docs = {(name, dtype): report[f"{name}_{dtype}_seconds_per_document_4_beams"]
            for name in seq2seq for dtype in LOTE_DTYPES}
    for other in ("int8", "bf16"):
        same = {"gpt2_lote": same_tokens(gpt2["fp32"]["lote_text"], gpt2[other]["lote_text"])}
        for name in seq2seq:
            same[f"{name}_lote"] = same_tokens([docs[name, "fp32"]["lote_text"]], [docs[name, other]["lote_text"]])
        if other == "bf16":  # transformers has no int8
            same["gpt2_transformers"] = same_tokens(gpt2["fp32"]["transformers_ids"], gpt2["bf16"]["transformers_ids"])
            for name in seq2seq:
                same[f"{name}_transformers"] = same_tokens(docs[name, "fp32"]["transformers_ids"],
                                                           docs[name, "bf16"]["transformers_ids"])
        report[f"{other}_same_tokens_as_fp32"] = same
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
