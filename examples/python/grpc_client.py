#!/usr/bin/env python3
"""Calls a running lote worker over gRPC, as another service would: waits until the model is
ready, calls the Inference RPC of the model's task and prints one JSON object.

    python examples/python/grpc_client.py [--addr 127.0.0.1:50051] [--model minilm] [--text T ...]

Exit 0 with the answer on stdout; 1 with the gRPC status code and details on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from types import SimpleNamespace
from typing import Any

import grpc

import lote_common as common
import lote_stubs

# The Inference RPC for each task, and the request field that holds the inputs.
RPCS = {
    "feature-extraction": ("Embed", "EmbedRequest"),
    "text-classification": ("Classify", "ClassifyRequest"),
    "token-classification": ("ClassifyTokens", "ClassifyTokensRequest"),
    "question-answering": ("AnswerQuestion", "AnswerQuestionRequest"),
    "fill-mask": ("FillMask", "FillMaskRequest"),
    "summarization": ("Summarize", "SummarizeRequest"),
    "text-generation": ("Generate", "GenerateRequest"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_worker_args(parser)
    parser.add_argument(
        "--text", action="append", help="an input (repeatable); default: sample sentences"
    )
    parser.add_argument("--question", help="question-answering: the question (with --context)")
    parser.add_argument("--context", help="question-answering: the context (with --question)")
    parser.add_argument(
        "--top-k", type=int, default=3, help="classification, fill-mask, QA: results per input"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=20, help="summarization, text-generation"
    )
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the model to be ready"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="deadline of the inference call, seconds"
    )
    parser.add_argument(
        "--show-error", action="store_true", help="also send an empty input list and show the error"
    )
    args = parser.parse_args(argv)
    if (args.question is None) != (args.context is None):
        parser.error("--question and --context go together")
    return args


def build_request(
    stubs: SimpleNamespace, chan: grpc.Channel, info: Any, args: argparse.Namespace, empty: bool
) -> tuple[Any, list[Any]]:
    """The request for the model's task and the inputs it carries (none when `empty`)."""
    pb = stubs.inference_pb2
    task = info.task
    request = getattr(pb, RPCS[task][1])(model=info.name)
    inputs: list[Any] = []
    if empty:
        pass
    elif task == "question-answering":
        if args.question is not None:
            pairs = [(args.question, args.context)]
        else:
            pairs = [(d["question"], d["context"]) for d in common.sample_documents(task, 2)]
        inputs = [pb.QuestionContext(question=q, context=c) for q, c in pairs]
    elif args.text:
        inputs = args.text
    else:
        mask = common.mask_token(stubs, chan, info.name) if task == "fill-mask" else ""
        count = len(common.MASKED) if task == "fill-mask" else len(common.TEXTS)
        inputs = [d["text"] for d in common.sample_documents(task, count, mask, numbered=False)]
    request.inputs.extend(inputs)
    if task in ("text-classification", "fill-mask", "question-answering"):
        request.top_k = args.top_k
    if task in ("summarization", "text-generation"):
        request.parameters.max_new_tokens = args.max_new_tokens
    return request, inputs


def summarize(task: str, inputs: list[Any], response: Any) -> list[dict[str, Any]]:
    """One compact JSON object per input."""
    out = []
    for given, result in zip(
        inputs, getattr(response, "embeddings" if task == "feature-extraction" else "results")
    ):
        item: dict[str, Any] = (
            {"question": given.question, "context": given.context}
            if task == "question-answering"
            else {"input": given}
        )
        if task == "feature-extraction":
            if result.pooled:
                item.update(common.vector_summary(list(result.pooled)))
            else:  # pooling "none": one vector per token
                item["tokens"] = len(result.tokens)
                item.update(
                    common.vector_summary(list(result.tokens[0].values)) if result.tokens else {}
                )
        elif task == "text-classification":
            item["labels"] = [{"label": x.label, "score": round(x.score, 5)} for x in result.labels]
        elif task == "token-classification":
            item["entities"] = [
                {
                    "label": e.label,
                    "word": e.word,
                    "score": round(e.score, 5),
                    "start": e.start,
                    "end": e.end,
                }
                for e in result.entities
            ]
        elif task == "question-answering":
            item["answers"] = [
                {"answer": a.answer, "score": round(a.score, 5), "start": a.start, "end": a.end}
                for a in result.answers
            ]
        elif task == "fill-mask":
            item["masks"] = [
                [{"token_str": p.token_str, "score": round(p.score, 5)} for p in mask.predictions]
                for mask in result.masks
            ]
        else:
            item["sequences"] = [
                {"text": s.text, "output_tokens": s.output_tokens, "finish_reason": s.finish_reason}
                for s in result.sequences
            ]
        item["truncated"] = result.truncated
        out.append(item)
    return out


def headers(call: grpc.Call) -> dict[str, str]:
    """The call's response headers and trailers, binary ones left out."""
    pairs = list(call.initial_metadata() or ()) + list(call.trailing_metadata() or ())
    return {key: value for key, value in pairs if isinstance(value, str)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Waits for the model, calls it once (twice with --show-error) and returns the output."""
    stubs = lote_stubs.load()
    with common.channel(args.addr, args.ca, args.cert, args.key) as chan:
        info = common.wait_for_model(stubs, chan, args.model, args.wait)
        if info.task not in RPCS:
            raise SystemExit(
                f"grpc_client: model {info.name} serves {info.task!r}, "
                "which this example does not call"
            )
        method = getattr(stubs.inference_pb2_grpc.InferenceStub(chan), RPCS[info.task][0])
        request, inputs = build_request(stubs, chan, info, args, empty=False)
        # The model may be ready while another one still loads: the Inference service answers
        # UNAVAILABLE until every model is, so UNAVAILABLE is retried within --wait.
        deadline = time.monotonic() + args.wait
        started = time.monotonic()
        response, call = common.retry_unavailable(
            lambda: method.with_call(
                request, timeout=args.timeout, compression=grpc.Compression.Gzip
            ),
            deadline,
        )
        output: dict[str, Any] = {
            "addr": args.addr,
            "model": info.name,
            "task": info.task,
            "architecture": info.architecture,
            "device": info.device,
            "dtype": info.dtype,
            "wall_ms": round((time.monotonic() - started) * 1000, 2),
            "results": summarize(info.task, inputs, response),
            "metadata": {
                key: round(value, 3) if isinstance(value, float) else value
                for key, value in common.message_fields(response.metadata).items()
            },
            "headers": headers(call),
        }
        if args.show_error:
            bad, _ = build_request(stubs, chan, info, args, empty=True)
            try:
                method(bad, timeout=args.timeout)
                output["bad_input"] = {"code": "OK", "details": "an empty input list was accepted"}
            except grpc.RpcError as error:
                output["bad_input"] = {"request": "inputs = []", **common.rpc_error(error)}
        return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        output = run(args)
    except grpc.RpcError as error:
        failure = common.rpc_error(error)
        print(f"grpc_client: {failure['code']}: {failure['details']}", file=sys.stderr)
        return 1
    except (TimeoutError, RuntimeError, OSError) as error:
        print(f"grpc_client: {error}", file=sys.stderr)
        return 1
    print(json.dumps(output, ensure_ascii=False))
    if args.show_error and output["bad_input"]["code"] != "INVALID_ARGUMENT":
        print(
            f"grpc_client: an empty input list gave {output['bad_input']['code']}, "
            "not INVALID_ARGUMENT",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
