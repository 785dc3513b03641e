"""The completion and chat calls tests/it/openai_http.rs makes with the official `openai`
client: plain, streamed, n > 1, seeded, stop strings, echo, and the bad inputs; one JSON object
with each answer or error on stdout.

Usage: python tests/openai/generation_calls.py BASE_URL GEN_MODEL CHAT_MODEL MESSAGES_JSON PROMPT
    PROMPT_IDS_JSON

MESSAGES_JSON is a list of conversations (lists of messages) to chat with greedily; PROMPT is
completed greedily by CHAT_MODEL with log-probabilities; PROMPT_IDS_JSON is GEN_MODEL's token
ids of the completions' prompt.
"""

import json
import sys
import urllib.request

import openai
from refusals import error_of

base_url, gen_model, chat_model, conversations, chat_model_prompt, prompt_ids = sys.argv[1:7]
prompt_ids = json.loads(prompt_ids)
conversations = json.loads(conversations)
client = openai.OpenAI(base_url=base_url, api_key="not-needed-on-loopback", max_retries=0)
out = {}
prompt = "O rato roeu a roupa do rei de Roma"


def completion(c):
    return {
        "texts": [choice.text for choice in c.choices],
        "indices": [choice.index for choice in c.choices],
        "finish": [choice.finish_reason for choice in c.choices],
        "usage": c.usage.model_dump() if c.usage else None,
        "object": c.object,
        "id": c.id,
    }


def streamed(chunks, chat=False):
    """The streamed choices joined by index, with their finish reasons and the usage chunk."""
    texts, finish, usage, objects, ids = {}, {}, None, set(), set()
    for chunk in chunks:
        objects.add(chunk.object)
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            piece = (choice.delta.content or "") if chat else choice.text
            texts[choice.index] = texts.get(choice.index, "") + piece
            if choice.finish_reason is not None:
                finish[choice.index] = choice.finish_reason
    order = sorted(texts)
    return {"texts": [texts[i] for i in order], "finish": [finish.get(i) for i in order],
            "usage": usage, "objects": sorted(objects), "ids": len(ids)}


out["greedy"] = completion(client.completions.create(
    model=gen_model, prompt=prompt, max_tokens=12, temperature=0))
out["greedy_ids"] = completion(client.completions.create(
    model=gen_model, prompt=prompt_ids, max_tokens=12, temperature=0))
out["greedy_list"] = completion(client.completions.create(
    model=gen_model, prompt=[prompt, "Ação e coração"], max_tokens=12, temperature=0, n=2))
out["greedy_stream"] = streamed(client.completions.create(
    model=gen_model, prompt=prompt, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True}))
# A stop string from the middle of the greedy text: the answer ends before its first place.
greedy_text = out["greedy"]["texts"][0]
stop = greedy_text[len(greedy_text) // 2:len(greedy_text) // 2 + 2]
out["stop"] = {
    "stop": stop,
    "whole": completion(client.completions.create(
        model=gen_model, prompt=prompt, max_tokens=12, temperature=0, stop=[stop, "\u0000"])),
    "stream": streamed(client.completions.create(
        model=gen_model, prompt=prompt, max_tokens=12, temperature=0, stop=stop, stream=True)),
}
out["echo"] = completion(client.completions.create(
    model=gen_model, prompt=prompt, max_tokens=4, temperature=0, echo=True))
seeded = dict(model=gen_model, prompt=prompt, max_tokens=10, temperature=0.9, n=3, seed=1234)
out["seeded"] = [completion(client.completions.create(**seeded)) for _ in range(2)]
out["seeded_stream"] = streamed(client.completions.create(**seeded, stream=True))
out["other_seed"] = completion(client.completions.create(**{**seeded, "seed": 99}))
out["unseeded_n"] = completion(client.completions.create(
    model=gen_model, prompt=prompt, max_tokens=6, n=4))
out["penalised"] = completion(client.completions.create(
    model=gen_model, prompt=prompt, max_tokens=12, temperature=0, frequency_penalty=2.0,
    presence_penalty=2.0))

# The wire itself, as curl sees it: server-sent events, each `data: {json}`, then `data: [DONE]`.
request = urllib.request.Request(
    base_url + "/completions", headers={"Content-Type": "application/json"},
    data=json.dumps({"model": gen_model, "prompt": prompt, "max_tokens": 3, "temperature": 0,
                     "stream": True}).encode())
with urllib.request.urlopen(request) as response:
    out["wire"] = {"content_type": response.headers["Content-Type"],
                   "lines": [line for line in response.read().decode().split("\n") if line]}


def chat(messages, **kwargs):
    c = client.chat.completions.create(model=chat_model, messages=messages, **kwargs)
    return {"texts": [choice.message.content for choice in c.choices],
            "roles": [choice.message.role for choice in c.choices],
            "finish": [choice.finish_reason for choice in c.choices],
            "usage": c.usage.model_dump(), "object": c.object}


out["chat"] = [chat(messages, max_tokens=12, temperature=0) for messages in conversations]
out["chat_stream"] = [
    streamed(client.chat.completions.create(model=chat_model, messages=messages, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}), chat=True)
    for messages in conversations
]


def chat_logprobs(content):
    return [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes,
             "top": [[top.token, top.logprob] for top in t.top_logprobs]} for t in content]


def streamed_logprobs(chunks):
    content = []
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.logprobs is not None and choice.logprobs.content:
                content.extend(choice.logprobs.content)
    return chat_logprobs(content)


out["chat_logprobs"] = [
    chat_logprobs(client.chat.completions.create(
        model=chat_model, messages=messages, max_tokens=12, temperature=0, logprobs=True,
        top_logprobs=2).choices[0].logprobs.content)
    for messages in conversations
]
out["chat_logprobs_stream"] = [
    streamed_logprobs(client.chat.completions.create(
        model=chat_model, messages=messages, max_tokens=12, temperature=0, logprobs=True,
        top_logprobs=2, stream=True))
    for messages in conversations
]
legacy = client.completions.create(model=chat_model, prompt=chat_model_prompt, max_tokens=12,
                                   temperature=0, logprobs=2)
out["completion_logprobs"] = {"text": legacy.choices[0].text,
                              **legacy.choices[0].logprobs.model_dump()}
out["chat_n"] = chat(conversations[0], max_completion_tokens=6, n=2, seed=7)
# `echo` with `logprobs`: the prompt scored before the completion; `max_tokens=0` scores only
# (lm-evaluation-harness's log-likelihoods).
echoed = client.completions.create(model=chat_model, prompt=chat_model_prompt, max_tokens=12,
                                   temperature=0, logprobs=2, echo=True)
out["echo_logprobs"] = {"text": echoed.choices[0].text, "finish": echoed.choices[0].finish_reason,
                        **echoed.choices[0].logprobs.model_dump()}
scores = client.completions.create(model=chat_model, prompt=chat_model_prompt, max_tokens=0,
                                   logprobs=2, echo=True)
out["echo_scores"] = {"text": scores.choices[0].text, "finish": scores.choices[0].finish_reason,
                      "usage": scores.usage.model_dump(), **scores.choices[0].logprobs.model_dump()}
# A shorter prompt beside it, padded in the same prefill: the long one's scores are unchanged.
pair = client.completions.create(model=chat_model, prompt=["Oi", chat_model_prompt], max_tokens=0,
                                 logprobs=2, echo=True)
out["echo_pair"] = [choice.logprobs.token_logprobs for choice in pair.choices]
chunks = list(client.completions.create(model=chat_model, prompt=chat_model_prompt, max_tokens=12,
                                        temperature=0, logprobs=2, echo=True, stream=True))
joined = {"text": "", "tokens": [], "token_logprobs": [], "text_offset": []}
for chunk in chunks:
    for choice in chunk.choices:
        joined["text"] += choice.text
        if choice.logprobs is not None:
            for key in ["tokens", "token_logprobs", "text_offset"]:
                joined[key].extend(getattr(choice.logprobs, key))
out["echo_logprobs_stream"] = joined
scores = list(client.completions.create(model=chat_model, prompt=chat_model_prompt, max_tokens=0,
                                        logprobs=2, echo=True, stream=True))
out["echo_scores_stream"] = {
    "text": "".join(c.text for chunk in scores for c in chunk.choices),
    "finish": [c.finish_reason for chunk in scores for c in chunk.choices if c.finish_reason],
}


def stream_error_of(call):
    """A stream that fails before its first event is an HTTP error, as any call."""
    return error_of(lambda: list(call()))


out["errors"] = {
    "no_template": error_of(lambda: client.chat.completions.create(
        model=gen_model, messages=[{"role": "user", "content": "Olá"}])),
    "wrong_task_chat": error_of(lambda: client.chat.completions.create(
        model="embed", messages=[{"role": "user", "content": "Olá"}])),
    "empty_messages": error_of(lambda: client.chat.completions.create(
        model=chat_model, messages=[])),
    "bad_temperature": error_of(lambda: client.completions.create(
        model=gen_model, prompt=prompt, temperature=5)),
    "bad_n": error_of(lambda: client.completions.create(model=gen_model, prompt=prompt, n=0)),
    "token_prompt": error_of(lambda: client.completions.create(
        model=gen_model, prompt=[1, 400, 3])),
    "too_long": error_of(lambda: client.completions.create(
        model=gen_model, prompt=prompt, max_tokens=100000)),
    "stream_too_long": stream_error_of(lambda: client.completions.create(
        model=gen_model, prompt=prompt * 40, max_tokens=100, stream=True)),
    "logit_bias": error_of(lambda: client.completions.create(
        model=gen_model, prompt=prompt, logit_bias={"5": 10})),
    "tools": error_of(lambda: client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": "Olá"}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])),
    "unknown_field": error_of(lambda: client.completions.create(
        model=gen_model, prompt=prompt, extra_body={"temprature": 1})),
    "scores_without_echo": error_of(lambda: client.completions.create(
        model=gen_model, prompt=prompt, max_tokens=0, logprobs=1)),
    "image_part": error_of(lambda: client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])),
}
print(json.dumps(out))
