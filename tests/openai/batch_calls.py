"""OpenAI's Batch API through the official `openai` client, for tests/it/openai_batch.rs:
upload a JSONL file, create a batch, poll it to its end, download its output and error files;
and the refusals. One JSON object on stdout.

Usage:
    batch_calls.py run BASE_URL FILE ENDPOINT [WINDOW]  upload, create, poll to the end, download
    batch_calls.py create BASE_URL FILE ENDPOINT        upload and create; the batch as created
    batch_calls.py finish BASE_URL BATCH_ID             poll to the end, download
    batch_calls.py cancel BASE_URL FILE ENDPOINT        upload, create, cancel at once, poll, download
    batch_calls.py refusals BASE_URL GOOD_FILE BIG_FILE each bad call's status and error body
"""

import json
import sys
import time

import openai
from refusals import error_of

mode, base_url = sys.argv[1:3]
client = openai.OpenAI(base_url=base_url, api_key="not-needed-on-loopback", max_retries=0)
FINAL = {"completed", "failed", "expired", "cancelled"}


def upload(path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="batch")


def create(path, endpoint, window="24h"):
    file = upload(path)
    return client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,
        completion_window=window,
        metadata={"origem": "teste em português"},
    )


def lines_of(file_id):
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines()]


def finish(batch_id, limit_s=600):
    deadline = time.time() + limit_s
    states = []
    while True:
        batch = client.batches.retrieve(batch_id)
        if not states or states[-1] != batch.status:
            states.append(batch.status)
        if batch.status in FINAL:
            break
        if time.time() > deadline:
            raise SystemExit(f"batch {batch_id} still {batch.status} after {limit_s} s")
        time.sleep(0.2)
    files = {}
    for name in ("output_file_id", "error_file_id"):
        file_id = getattr(batch, name)
        if file_id:
            meta = client.files.retrieve(file_id)
            files[name] = {"bytes": meta.bytes, "purpose": meta.purpose,
                           "downloaded": len(client.files.content(file_id).content)}
    listed = [b.id for b in client.batches.list(limit=100).data]
    return {
        "batch": batch.model_dump(),
        "states": states,
        "output": lines_of(batch.output_file_id),
        "errors": lines_of(batch.error_file_id),
        "files": files,
        "listed": batch.id in listed,
    }


def refusals(good, big):
    out = {}
    file = upload(good)
    out["input_content"] = client.files.content(file.id).text
    out["uploaded"] = file.model_dump()
    out["listed_files"] = file.id in [f.id for f in client.files.list(purpose="batch").data]
    out["big_file"] = error_of(lambda: upload(big))
    with open(good, "rb") as f:
        out["wrong_purpose"] = error_of(lambda: client.files.create(file=f, purpose="fine-tune"))
    create = client.batches.create
    out["unknown_file"] = error_of(lambda: create(
        input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"))
    out["bad_endpoint"] = error_of(lambda: create(
        input_file_id=file.id, endpoint="/v1/moderations", completion_window="24h"))
    out["bad_window"] = error_of(lambda: create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="1d"))
    out["bad_metadata"] = error_of(lambda: create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"k": "x" * 513}))
    out["unknown_batch"] = error_of(lambda: client.batches.retrieve("batch_nope"))
    out["unknown_file_content"] = error_of(lambda: client.files.content("file-nope"))
    out["bad_limit"] = error_of(lambda: client.batches.list(limit=0))
    done = create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    finish(done.id)
    out["cancel_completed"] = error_of(lambda: client.batches.cancel(done.id))
    deleted = client.files.delete(file.id)
    out["deleted"] = deleted.deleted
    out["deleted_again"] = error_of(lambda: client.files.delete(file.id))
    return out


if mode == "run":
    path, endpoint = sys.argv[3:5]
    window = sys.argv[5] if len(sys.argv) > 5 else "24h"
    out = finish(create(path, endpoint, window).id)
elif mode == "create":
    out = create(*sys.argv[3:5]).model_dump()
elif mode == "finish":
    out = finish(sys.argv[3])
elif mode == "cancel":
    batch = create(*sys.argv[3:5])
    cancelled = client.batches.cancel(batch.id)
    out = finish(batch.id)
    out["cancel_answer"] = cancelled.status
elif mode == "refusals":
    out = refusals(*sys.argv[3:5])
else:
    raise SystemExit(f"unknown mode {mode}")
print(json.dumps(out, ensure_ascii=False))
