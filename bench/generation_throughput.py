"""Generation speed of `lote run` beside transformers' `generate`, same 2 threads, same weights.

Usage: python bench/generation_throughput.py LOTE_BINARY [--repeats R]

Builds (once, cached in ~/.cache/lote-bench) two random-weight models of real shapes:
GPT-2 small (124M) and DistilBART-CNN-12-6 (306M), each with a word-level tokenizer of the
same vocabulary size, then measures
  1. GPT-2 greedy decode tokens/s with 1 and 8 sequences, 64 new tokens each (forced length);
  2. DistilBART seconds per document, 4 beams, 64 output tokens (forced length).
lote's time is the whole `lote run` process minus its start-up (model load), measured
separately with a one-token run; transformers' is the generate call on a loaded model.
Reports medians and ratios (lote / transformers; for seconds per document, transformers / lote
so that above 1 means lote is faster).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2
CACHE = Path.home() / ".cache" / "lote-bench"


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
        model = GPT2LMHeadModel(GPT2Config()).eval()  # the defaults are GPT-2 small
        model.save_pretrained(gpt2_dir, safe_serialization=True)
        tok = PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(50257, {"<|endoftext|>": 50256, "<unk>": 0}),
                                      eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<unk>")
        tok.save_pretrained(gpt2_dir)
    if not (bart_dir / "model.safetensors").exists():
        config = BartConfig(vocab_size=50264, d_model=1024, encoder_layers=12, decoder_layers=6,
                            encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                            decoder_ffn_dim=4096, max_position_embeddings=1024, forced_bos_token_id=0,
                            forced_eos_token_id=2, decoder_start_token_id=2)
        model = BartForConditionalGeneration(config).eval()
        model.save_pretrained(bart_dir, safe_serialization=True)
        specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        tok = PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(50264, specials), bos_token="<s>",
                                      eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
        tok.save_pretrained(bart_dir)
    return gpt2_dir, bart_dir


def lote_seconds(binary, model_dir, task, texts, params, batch, work):
    source, out = work / "in.jsonl", work / "out.jsonl"
    source.write_text("".join(json.dumps({"text": t, "params": params}) + "\n" for t in texts))
    env = dict(os.environ, LOTE__DEVICE__THREADS=str(THREADS), LOTE__DEVICE__KIND="cpu",
               LOTE__BATCHING__MAX_BATCH_SIZE=str(batch), OMP_NUM_THREADS=str(THREADS))
    start = time.perf_counter()
    subprocess.run([binary, "run", "--model", str(model_dir), "--task", task, "--input", str(source),
                    "--output", str(out)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    from transformers import BartForConditionalGeneration, GPT2LMHeadModel
    gpt2_dir, bart_dir = build_models()
    gpt2 = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    bart = BartForConditionalGeneration.from_pretrained(bart_dir).eval()
    prompt = " ".join(f"w{100 + i}" for i in range(32))
    document = " ".join(f"w{1000 + (i * 37) % 40000}" for i in range(400))
    fixed = {"max_new_tokens": 64, "min_new_tokens": 64}
    report = {"threads": THREADS, "new_tokens": 64}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        startup = {
            "gpt2": statistics.median(lote_seconds(args.binary, gpt2_dir, "text-generation", [prompt], {"max_new_tokens": 1}, 1, work) for _ in range(args.repeats)),
            "bart": statistics.median(lote_seconds(args.binary, bart_dir, "summarization", ["w5 w6"], {"max_new_tokens": 1, "num_beams": 1}, 1, work) for _ in range(args.repeats)),
        }
        report["lote_startup_seconds"] = startup
        for sequences in (1, 8):
            ids = torch.tensor([[100 + i for i in range(32)]] * sequences)
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(lote_seconds(args.binary, gpt2_dir, "text-generation", [prompt] * sequences, fixed, sequences, work) - startup["gpt2"])
                start = time.perf_counter()
                with torch.no_grad():
                    gpt2.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=50256, **fixed)
                theirs.append(time.perf_counter() - start)
            tokens = 64 * sequences
            rate_ours, rate_theirs = tokens / statistics.median(ours), tokens / statistics.median(theirs)
            report[f"gpt2_decode_tokens_per_second_{sequences}_seq"] = {
                "lote": rate_ours, "transformers": rate_theirs, "ratio_lote_over_transformers": rate_ours / rate_theirs}
        doc_ids = torch.tensor([[0] + [1000 + (i * 37) % 40000 for i in range(400)] + [2]])
        beams = dict(fixed, num_beams=4)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(lote_seconds(args.binary, bart_dir, "summarization", [document], beams, 1, work) - startup["bart"])
            start = time.perf_counter()
            with torch.no_grad():
                bart.generate(doc_ids, attention_mask=torch.ones_like(doc_ids), **beams)
            theirs.append(time.perf_counter() - start)
        report["distilbart_seconds_per_document_4_beams"] = {
            "lote": statistics.median(ours), "transformers": statistics.median(theirs),
            "speedup_transformers_over_lote": statistics.median(theirs) / statistics.median(ours)}
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
