"""The official `openai` Python SDK against a running tollgate: models,
tools round trip, json_schema, embeddings, the Responses API, and how a 402
surfaces. Prints one line per check and `N passed, N failed`."""
import json
import sys

import openai
from harness import run_checks
from openai import OpenAI

base, key, broke_key = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def models_retrieve():
    m = client.models.retrieve("gpt")
    assert m.id == "gpt", m
    try:
        client.models.retrieve("nope")
        raise AssertionError("an unknown model must be a NotFoundError")
    except openai.NotFoundError:
        pass


def tools_round_trip():
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object",
              "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="gpt", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "weather", first
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})}]
    second = client.chat.completions.create(model="gpt", messages=messages, tools=tools)
    assert "upstream saw" in second.choices[0].message.content, second


def json_schema():
    r = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "answer?"}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
                                           "type": "object", "properties": {"answer": {"type": "string"}}}}})
    assert json.loads(r.choices[0].message.content) == {"answer": "42"}, r


def embeddings():
    r = client.embeddings.create(model="embed", input=["a", "b"])
    assert len(r.data) == 2 and r.data[1].embedding == [0.6, 0.8], r


def responses():
    r = client.responses.create(model="gpt", input="hi")
    assert r.output_text == "hello from responses", r


def insufficient_credits():
    broke = OpenAI(base_url=f"{base}/v1", api_key=broke_key, max_retries=0)
    try:
        broke.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an empty wallet must be refused")
    except openai.APIStatusError as e:
        assert e.status_code == 402 and e.code == "insufficient_credits", (e.status_code, e.code)


run_checks([("models.retrieve", models_retrieve), ("tools round trip", tools_round_trip),
           ("response_format json_schema", json_schema), ("embeddings.create", embeddings),
           ("responses.create", responses), ("402 insufficient_credits", insufficient_credits)])
