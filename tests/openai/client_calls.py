"""The calls tests/it/openai_http.rs makes with the official `openai` client (and, for rerank,
which the client has no method for, plain urllib as a curl script would): one JSON object with
each answer or error on stdout.

Usage: python tests/openai/client_calls.py BASE_URL EMBED_MODEL RERANK_MODEL TOKEN_IDS_JSON

TOKEN_IDS_JSON: the embedding model's token ids of the first text, special tokens included.
"""

import json
import sys
import urllib.error
import urllib.request

import openai
from refusals import error_of

base_url, embed_model, rerank_model, first_ids = sys.argv[1:5]
first_ids = json.loads(first_ids)
client = openai.OpenAI(base_url=base_url, api_key="not-needed-on-loopback", max_retries=0)
out = {}

models = client.models.list()
out["models"] = sorted(m.id for m in models.data)
out["model"] = client.models.retrieve(embed_model).id

# The client asks for base64 and decodes it itself; float is asked for explicitly.
texts = ["Olá, você está bem?", "A ação foi concluída com sucesso.", "São Paulo"]
default = client.embeddings.create(model=embed_model, input=texts)
floats = client.embeddings.create(model=embed_model, input=texts, encoding_format="float")
one = client.embeddings.create(model=embed_model, input=texts[0])
short = client.embeddings.create(model=embed_model, input=texts[0], dimensions=8)
out["embeddings"] = [d.embedding for d in default.data]
out["embeddings_float"] = [d.embedding for d in floats.data]
out["embedding_one"] = one.data[0].embedding
out["embedding_short"] = short.data[0].embedding
out["embedding_ids"] = client.embeddings.create(
    model=embed_model, input=first_ids, encoding_format="float").data[0].embedding
out["embedding_ids_list"] = client.embeddings.create(
    model=embed_model, input=[first_ids]).data[0].embedding
out["indices"] = [d.index for d in default.data]
out["usage"] = default.usage.prompt_tokens


out["errors"] = {
    "unknown_model": error_of(lambda: client.embeddings.create(model="nope", input="a")),
    "wrong_task": error_of(lambda: client.embeddings.create(model=rerank_model, input="a")),
    "empty_input": error_of(lambda: client.embeddings.create(model=embed_model, input=[])),
    "blank_text": error_of(lambda: client.embeddings.create(model=embed_model, input=["ok", "  "])),
    "too_many_dimensions": error_of(
        lambda: client.embeddings.create(model=embed_model, input="a", dimensions=100000)),
    "token_ids": error_of(
        lambda: client.embeddings.create(model=embed_model, input=[[1, 2, 999999]])),
    "negative_id": error_of(lambda: client.embeddings.create(model=embed_model, input=[-1, 2])),
}


def post(path, body):
    request = urllib.request.Request(base_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return {"status": response.status, "body": json.load(response)}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": json.load(e)}


query = "Quem propôs o Transformer?"
documents = ["O gato dormiu.", "O Transformer foi proposto por pesquisadores do Google em 2017."]
out["rerank"] = post("/rerank", {"model": rerank_model, "query": query, "documents": documents,
                                 "top_n": 2, "return_documents": True})
out["rerank_objects"] = post("/rerank", {"model": rerank_model, "query": query,
                                         "documents": [{"text": d} for d in documents]})
out["rerank_empty"] = post("/rerank", {"model": rerank_model, "query": query, "documents": []})
out["not_json"] = post("/embeddings", "not an object")
out["no_route"] = post("/nowhere", {})
print(json.dumps(out))
