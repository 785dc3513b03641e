#!/usr/bin/env python3
"""Feeds a lote job from another service: creates the job over gRPC with the number of
documents to expect, publishes the documents straight to the model's RabbitMQ queue, waits for
the job to end and reads its results back.

    python examples/python/amqp_publisher.py --model minilm --count 20
    python examples/python/amqp_publisher.py --model minilm --input docs.jsonl \
        --content-type protobuf

Needs workers with amqp.enabled = true (they declare the queues). Prints one JSON object; exit 0
only when the job completed with every document exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pika
import pika.exceptions

import lote_common as common
import lote_stubs

CONTENT_TYPES = {"json": "application/json", "protobuf": "application/x-protobuf"}
FINAL_STATES = ("completed", "failed", "cancelled")
# Failures of the connection itself: reconnect and publish the document again (a duplicate is
# harmless: a document's result is written once).
CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    pika.exceptions.ConnectionBlockedTimeout,
)


class PublishError(Exception):
    """A document could not be published after every retry."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_worker_args(parser)
    parser.add_argument(
        "--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2f", help="the workers' RabbitMQ"
    )
    parser.add_argument("--queue-prefix", default="lote", help="the workers' amqp.queue_prefix")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        type=Path,
        help='JSONL: {"custom_id"?, "text"} or {"question", "context"}, "params"?',
    )
    source.add_argument(
        "--count", type=int, default=20, help="that many generated documents (default 20)"
    )
    parser.add_argument(
        "--content-type", choices=sorted(CONTENT_TYPES), default="json", help="message encoding"
    )
    parser.add_argument(
        "--params", default="", help="job parameters as a JSON object, e.g. '{\"normalize\": true}'"
    )
    parser.add_argument(
        "--idempotency-key", default="", help="submitting twice with it returns the same job"
    )
    parser.add_argument(
        "--retries", type=int, default=5, help="attempts per document before giving up"
    )
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the model and its queue"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the job to end"
    )
    args = parser.parse_args(argv)
    if args.input is None and args.count < 1:
        parser.error("--count must be at least 1")
    if args.params:
        try:
            if not isinstance(json.loads(args.params), dict):
                raise ValueError
        except ValueError:
            parser.error("--params must be a JSON object")
    return args


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The JSONL file's documents, each given a custom_id (`line-N`) if it has none."""
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as error:
            raise SystemExit(f"amqp_publisher: {path}:{number}: not JSON: {error}") from None
        if not isinstance(document, dict) or (
            "text" not in document and "question" not in document
        ):
            raise SystemExit(
                f'amqp_publisher: {path}:{number}: needs "text", or "question" and "context"'
            )
        unknown = set(document) - {"custom_id", "text", "question", "context", "params"}
        if unknown:
            raise SystemExit(f"amqp_publisher: {path}:{number}: unknown fields {sorted(unknown)}")
        document.setdefault("custom_id", f"line-{number}")
        documents.append(document)
    ids = [d["custom_id"] for d in documents]
    if not documents or len(set(ids)) != len(ids):
        raise SystemExit(f"amqp_publisher: {path}: no documents, or a custom_id used twice")
    return documents


def encode(
    stubs: SimpleNamespace, job_id: str, document: dict[str, Any], content_type: str
) -> bytes:
    """One queue message, as src/jobs/wire.rs reads it: the same fields in JSON or protobuf."""
    fields = {"job_id": job_id, "custom_id": str(document["custom_id"])}
    fields.update({k: document[k] for k in ("text", "question", "context") if k in document})
    if content_type == "json":
        if document.get("params"):
            fields["params"] = document["params"]
        return json.dumps(fields, ensure_ascii=False).encode()
    if document.get("params"):
        fields["params_json"] = json.dumps(document["params"])
    return stubs.jobs_pb2.QueuedDocument(**fields).SerializeToString()


class Publisher:
    """A confirming, mandatory publisher to one queue through the default exchange, which
    reconnects after connection failures."""

    def __init__(self, url: str, queue: str, retries: int) -> None:
        self.parameters = pika.URLParameters(url)
        self.parameters.socket_timeout = 10
        self.parameters.blocked_connection_timeout = 30
        self.parameters.connection_attempts = 3
        self.parameters.retry_delay = 1
        self.queue = queue
        self.retries = retries
        self.connection: pika.BlockingConnection | None = None
        self.channel: Any = None
        self.attempts = 0

    def open(self) -> None:
        self.close()
        self.connection = pika.BlockingConnection(self.parameters)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self.connection.close()
        self.connection = None

    def wait_for_queue(self, timeout: float) -> int:
        """The queue's consumer count, once it exists. Passive declare only: the queue is a
        quorum queue whose arguments (x-delivery-limit, dead-lettering) are the workers' to
        choose, and declaring it with other arguments would fail or differ."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.open()
            except pika.exceptions.AMQPConnectionError as error:
                params = self.parameters
                where = f"{params.host}:{params.port}, vhost {params.virtual_host}"
                raise PublishError(f"cannot connect to RabbitMQ at {where}: {error!r}") from error
            try:
                declared = self.channel.queue_declare(self.queue, passive=True)
                return declared.method.consumer_count
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code != 404:
                    raise
            if time.monotonic() + 1 > deadline:
                raise PublishError(
                    f"no worker has declared queue {self.queue} yet; start a worker with "
                    f"amqp.enabled = true, amqp.queue_prefix = the --queue-prefix given here "
                    f"and this model in its [[models]]"
                )
            time.sleep(1)

    def publish(self, body: bytes, properties: pika.BasicProperties) -> None:
        """Publishes one message and waits for the broker's confirm, retrying a bounded number
        of times with backoff."""
        problem = ""
        for attempt in range(self.retries):
            self.attempts += 1
            try:
                if self.channel is None or not self.channel.is_open:
                    self.open()
                self.channel.basic_publish("", self.queue, body, properties, mandatory=True)
                return
            except pika.exceptions.UnroutableError:
                problem = (
                    f"the broker returned the message as unroutable: no worker has declared queue "
                    f"{self.queue} yet; start a worker with amqp.enabled = true"
                )
            except pika.exceptions.NackError:
                problem = (
                    f"the broker refused the message (nack): queue {self.queue} may be full "
                    f"(x-overflow = reject-publish) or unavailable"
                )
            except CONNECTION_ERRORS as error:
                problem = f"connection to RabbitMQ lost: {error!r}"
                self.channel = None
            if attempt + 1 < self.retries:
                time.sleep(min(0.5 * 2**attempt, 5.0))
        raise PublishError(f"gave up after {self.retries} attempts: {problem}")


def watch(stubs: SimpleNamespace, chan: grpc.Channel, job_id: str, deadline: float) -> Any:
    """The job once it ends, from WatchJob; polling GetJob if the stream breaks."""
    jobs = stubs.jobs_pb2_grpc.JobsStub(chan)
    last = None
    try:
        for event in jobs.WatchJob(
            stubs.jobs_pb2.WatchJobRequest(id=job_id), timeout=max(deadline - time.monotonic(), 1)
        ):
            if event.HasField("job"):
                last = event.job
        if last is not None and last.state in FINAL_STATES:
            return last
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return jobs.GetJob(stubs.jobs_pb2.GetJobRequest(id=job_id), timeout=10)
        print(
            f"amqp_publisher: WatchJob broke ({common.rpc_error(error)['code']}); polling GetJob",
            file=sys.stderr,
        )
    while True:
        job = common.retry_unavailable(
            lambda: jobs.GetJob(stubs.jobs_pb2.GetJobRequest(id=job_id), timeout=10), deadline
        )
        if job.state in FINAL_STATES or time.monotonic() + 1 > deadline:
            return job
        time.sleep(1)


def results(stubs: SimpleNamespace, chan: grpc.Channel, job_id: str, deadline: float) -> list[Any]:
    """Every finished document from GetResults, resuming after the last `seq` if the stream
    breaks (at most 5 times)."""
    jobs = stubs.jobs_pb2_grpc.JobsStub(chan)
    out: list[Any] = []
    for _ in range(5):
        after = out[-1].seq if out else -1
        request = stubs.jobs_pb2.GetResultsRequest(id=job_id, after=after, from_start=after < 0)
        try:
            for result in jobs.GetResults(request, timeout=max(deadline - time.monotonic(), 10)):
                out.append(result)
            return out
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                raise
            time.sleep(1)
    raise RuntimeError(f"GetResults for {job_id} kept breaking")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Creates the job, publishes its documents, waits and reads the results. Returns the
    output and whether every document came back exactly once."""
    stubs = lote_stubs.load()
    with common.channel(args.addr, args.ca, args.cert, args.key) as chan:
        info = common.wait_for_model(stubs, chan, args.model, args.wait)
        if args.input is not None:
            documents = read_documents(args.input)
        else:
            mask = common.mask_token(stubs, chan, info.name) if info.task == "fill-mask" else ""
            documents = [
                {"custom_id": f"doc-{i}", **document}
                for i, document in enumerate(common.sample_documents(info.task, args.count, mask))
            ]
        queue = f"{args.queue_prefix}.documents.{info.name}"
        publisher = Publisher(args.amqp_url, queue, args.retries)
        try:
            # Before the job exists, so a missing queue leaves nothing behind.
            consumers = publisher.wait_for_queue(args.wait)
            if consumers == 0:
                print(
                    f"amqp_publisher: {queue} has no consumer now: documents wait for a worker",
                    file=sys.stderr,
                )
            jobs = stubs.jobs_pb2_grpc.JobsStub(chan)
            request = stubs.jobs_pb2.SubmitJobRequest(
                model=info.name,
                task=info.task,
                params_json=args.params,
                idempotency_key=args.idempotency_key,
                external_documents=len(documents),
            )
            job = jobs.SubmitJob(request, timeout=30)
            properties = pika.BasicProperties(
                content_type=CONTENT_TYPES[args.content_type],
                delivery_mode=2,
                app_id="lote-examples",
            )
            started = time.monotonic()
            try:
                for document in documents:
                    publisher.publish(
                        encode(stubs, job.id, document, args.content_type), properties
                    )
            except PublishError as error:
                # Nobody else will publish the rest: cancel rather than leave the job waiting.
                jobs.CancelJob(stubs.jobs_pb2.CancelJobRequest(id=job.id), timeout=30)
                raise PublishError(f"{error} (job {job.id} cancelled)") from error
            publish_s = time.monotonic() - started
        finally:
            publisher.close()

        deadline = time.monotonic() + args.timeout
        done = watch(stubs, chan, job.id, deadline)
        finished = results(stubs, chan, job.id, deadline)
    sent = {str(d["custom_id"]) for d in documents}
    returned = [r.custom_id for r in finished]
    first = finished[0] if finished else None
    output = {
        "job_id": job.id,
        "model": info.name,
        "task": info.task,
        "queue": queue,
        "content_type": CONTENT_TYPES[args.content_type],
        "published": len(documents),
        "publish_attempts": publisher.attempts,
        "publish_seconds": round(publish_s, 3),
        "state": done.state,
        "total": done.total,
        "succeeded": done.succeeded,
        "failed": done.failed,
        "pending": done.pending,
        "job_seconds": round((done.finished_ms - done.created_ms) / 1000, 3)
        if done.finished_ms
        else None,
        "results": len(finished),
        "distinct_custom_ids": len(set(returned)),
        # The first few documents that did not succeed, with the worker's reason.
        "not_succeeded": [
            {"custom_id": r.custom_id, "state": r.state, "error": r.error}
            for r in finished
            if r.state != "succeeded"
        ][:5],
        "first_result": None
        if first is None
        else {
            "custom_id": first.custom_id,
            "seq": first.seq,
            "state": first.state,
            "result": common.compact(json.loads(first.result_json)) if first.result_json else None,
            "error": first.error or None,
        },
    }
    exactly_once = (
        done.state == "completed"
        and done.succeeded == len(documents)
        and len(returned) == len(documents)
        and set(returned) == sent
        and all(r.state == "succeeded" for r in finished)
    )
    return output, exactly_once


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        output, exactly_once = run(args)
    except grpc.RpcError as error:
        failure = common.rpc_error(error)
        print(f"amqp_publisher: {failure['code']}: {failure['details']}", file=sys.stderr)
        return 1
    except PublishError as error:
        print(f"amqp_publisher: {error}", file=sys.stderr)
        return 1
    except pika.exceptions.AMQPError as error:  # its str() is often empty: the repr names it
        print(f"amqp_publisher: RabbitMQ: {error!r}", file=sys.stderr)
        return 1
    except (TimeoutError, RuntimeError, OSError) as error:
        print(f"amqp_publisher: {error}", file=sys.stderr)
        return 1
    print(json.dumps(output, ensure_ascii=False))
    if not exactly_once:
        print(
            f"amqp_publisher: job {output['job_id']} ended {output['state']} with "
            f"{output['succeeded']} of {output['published']} documents succeeded and "
            f"{output['results']} results for {output['distinct_custom_ids']} custom ids: "
            "not every document exactly once",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
