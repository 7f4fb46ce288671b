"""The official `openai` Python SDK against a running tollgate: models,
tools round trip, json_schema, embeddings, the Responses API, audio speech
and transcription, moderations, and how a 402 surfaces. Prints one line per check and `N passed, N failed`."""
import io
import json
import sys
import wave

import openai
from harness import run_checks
from openai import OpenAI

base, key, broke_key = sys.argv[1], sys.argv[2], sys.argv[3]
capped_key = sys.argv[4] if len(sys.argv) > 4 else None
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
    # Strict outputs generate fields in schema order: "reasoning" first.
    r = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "answer?"}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "b", "schema": {
                                           "type": "object", "properties": {"reasoning": {"type": "string"},
                                                                            "answer": {"type": "string"}}}}})
    assert list(json.loads(r.choices[0].message.content)) == ["reasoning", "answer"], r


def image_b64():
    r = client.images.generate(model="image", prompt="a fox", background="transparent", output_format="webp")
    assert r.data[0].b64_json == "aW1hZ2U=" and r.data[0].url is None, r
    assert (r.background, r.output_format, r.usage.output_tokens) == ("transparent", "webp", 4160), r


def embeddings():
    r = client.embeddings.create(model="embed", input=["a", "b"])
    assert len(r.data) == 2 and r.data[1].embedding == [0.6, 0.8], r


def responses():
    r = client.responses.create(model="gpt", input="hi")
    assert r.output_text == "hello from responses", r


def speech():
    audio = client.audio.speech.create(model="tts", voice="alloy", input="Hello from tollgate")
    assert audio.content == b"ID3\x04 fake mp3 from upstream \x00\xff", audio.content


def transcription():
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000)
    t = client.audio.transcriptions.create(model="whisper", file=("hello.wav", buf.getvalue(), "audio/wav"))
    assert t.text == "transcribed by upstream", t


def moderation():
    m = client.moderations.create(model="mod", input="hello")
    assert m.results[0].flagged is False, m


def insufficient_credits():
    broke = OpenAI(base_url=f"{base}/v1", api_key=broke_key, max_retries=0)
    try:
        broke.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an empty wallet must be refused")
    except openai.APIStatusError as e:
        assert e.status_code == 402 and e.code == "insufficient_credits", (e.status_code, e.code)


def daily_cap_fails_fast():
    if capped_key is None:
        return
    import time
    capped = OpenAI(base_url=f"{base}/v1", api_key=capped_key)  # the SDK's default retries
    started = time.monotonic()
    try:
        capped.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a key past its daily limit must be refused")
    except openai.RateLimitError as e:
        assert e.response.headers.get("retry-after") is None, "no Retry-After past 60 s"
    assert time.monotonic() - started < 15, "the SDK slept instead of failing fast"


run_checks([("models.retrieve", models_retrieve), ("tools round trip", tools_round_trip),
           ("response_format json_schema", json_schema), ("embeddings.create", embeddings),
           ("responses.create", responses), ("audio.speech.create", speech),
           ("audio.transcriptions.create (WAV)", transcription), ("moderations.create", moderation),
           ("402 insufficient_credits", insufficient_credits), ("images.generate b64_json", image_b64),
           ("a daily-cap 429 fails fast", daily_cap_fails_fast)])
