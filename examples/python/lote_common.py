"""What both examples need from a running worker: a channel, waiting until a model is ready,
sample inputs per task, and JSON-friendly forms of the answers."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

# Portuguese first (accents and cedillas are the point), then English.
TEXTS = (
    "O médico não pôde vir à reunião.",
    "A maçã caiu da árvore no quintal da avó, em São Paulo.",
    "Ninguém sabe onde ficou a chave do armazém.",
    "The committee approved the budget after a long discussion.",
)
# {mask} becomes the model's mask token.
MASKED = (
    "O médico não pôde vir à {mask}.",
    "Lisboa é a {mask} de Portugal.",
    "Paris is the {mask} of France.",
)
QUESTIONS = (
    ("Onde fica a Torre de Belém?", "A Torre de Belém fica em Lisboa, à beira do rio Tejo."),
    (
        "Quem escreveu Dom Casmurro?",
        "Dom Casmurro é um romance de Machado de Assis, publicado em 1899.",
    ),
    ("Who founded the company?", "The company was founded in 1998 by Ana Souza in Belo Horizonte."),
)


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    """The options both examples take to reach a worker and pick its model."""
    parser.add_argument("--addr", default="127.0.0.1:50051", help="host:port, or an http(s):// URL")
    parser.add_argument("--model", help="model name (default: the first one the worker lists)")
    parser.add_argument("--ca", help="PEM of the CA that signed the worker's certificate (TLS)")
    parser.add_argument("--cert", help="client certificate PEM (mutual TLS)")
    parser.add_argument("--key", help="client key PEM (mutual TLS)")


def channel(
    addr: str, ca: str | None = None, cert: str | None = None, key: str | None = None
) -> grpc.Channel:
    """A channel to `addr` (host:port, or http:// / https:// URL as `lote` takes it).

    TLS when --ca is given or the URL is https:// (system roots); --cert/--key for mutual TLS.
    """
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    secure = addr.startswith("https://") or ca is not None
    target = addr.split("://", 1)[-1].rstrip("/")
    if not secure:
        return grpc.insecure_channel(target, options=options)
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    return grpc.secure_channel(target, credentials, options=options)


def rpc_error(error: grpc.RpcError) -> dict[str, str]:
    """A gRPC failure as {code, details}."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return {"code": code.name if code else "UNKNOWN", "details": details or ""}


def retry_unavailable(call: Callable[[], T], deadline: float) -> T:
    """Calls `call` until it stops failing with UNAVAILABLE (worker starting, model loading,
    a pod restarting) or `deadline` (time.monotonic()) passes; any other error is raised."""
    delay = 0.2
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def wait_for_model(
    stubs: SimpleNamespace, chan: grpc.Channel, name: str | None, timeout: float
) -> Any:
    """The model's ModelInfo once its state is `ready` (the worker loads models in the
    background after it starts listening). Without a name, the first model the worker lists.

    Raises TimeoutError when it is not ready within `timeout` seconds, grpc.RpcError for
    anything but UNAVAILABLE (NOT_FOUND: the worker has no model of that name).
    """
    models = stubs.models_pb2_grpc.ModelsStub(chan)
    deadline = time.monotonic() + timeout
    last = "no answer"
    delay = 0.2
    while True:
        try:
            if name:
                info = models.GetModel(stubs.models_pb2.GetModelRequest(name=name), timeout=5)
            else:
                listed = models.ListModels(stubs.models_pb2.ListModelsRequest(), timeout=5).models
                if not listed:
                    raise RuntimeError(
                        "the worker serves no model: add a [[models]] table to its settings"
                    )
                info = listed[0]
            if info.state == "ready":
                return info
            last = f"model {info.name} is {info.state}"
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            last = f"{error.code().name}: {error.details()}"
        if time.monotonic() + delay > deadline:
            raise TimeoutError(f"not ready within {timeout:g} s ({last})")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def mask_token(stubs: SimpleNamespace, chan: grpc.Channel, model: str) -> str:
    """The fill-mask model's mask token: BERT's `[MASK]` if its tokenizer keeps that as one
    token, else RoBERTa's `<mask>` (Tokenize's `special` flag marks only the tokens the
    tokenizer adds, [CLS] and [SEP], not a mask written in the text)."""
    inference = stubs.inference_pb2_grpc.InferenceStub(chan)
    for candidate in ("[MASK]", "<mask>"):
        request = stubs.inference_pb2.TokenizeRequest(
            model=model, inputs=[candidate], add_special_tokens=False
        )
        tokens = inference.Tokenize(request, timeout=10).results[0].tokens
        if len(tokens) == 1 and tokens[0].text == candidate:
            return candidate
    return "<mask>"


def sample_documents(
    task: str, count: int, mask: str = "[MASK]", numbered: bool = True
) -> list[dict[str, str]]:
    """`count` inputs for `task`: {"text"} or {"question", "context"}; `numbered` appends
    " (i)" to texts so that no two documents of a job are the same."""
    documents = []
    for i in range(count):
        suffix = f" ({i})" if numbered else ""
        if task == "question-answering":
            question, context = QUESTIONS[i % len(QUESTIONS)]
            documents.append({"question": question, "context": context})
        elif task == "fill-mask":
            documents.append({"text": MASKED[i % len(MASKED)].format(mask=mask) + suffix})
        else:
            documents.append({"text": TEXTS[i % len(TEXTS)] + suffix})
    return documents


def vector_summary(values: list[float]) -> dict[str, Any]:
    """A vector as its length, first four values and L2 norm."""
    return {
        "dim": len(values),
        "head": [round(v, 5) for v in values[:4]],
        "norm": round(math.sqrt(sum(v * v for v in values)), 5),
    }


def compact(value: Any) -> Any:
    """`value` with every list of more than 8 numbers replaced by vector_summary()."""
    if isinstance(value, list):
        if len(value) > 8 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return vector_summary(value)
        return [compact(v) for v in value]
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    return value


def message_fields(message: Any) -> dict[str, Any]:
    """A flat protobuf message's fields by name, unset ones included (no json_format: its
    keyword arguments differ between protobuf versions)."""
    return {field.name: getattr(message, field.name) for field in message.DESCRIPTOR.fields}
