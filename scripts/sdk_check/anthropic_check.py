"""The official `anthropic` Python SDK against a running tollgate, as Claude
Code's SDK calls it: messages.create and .stream on a model with an
anthropic route and on one translated onto an OpenAI-compatible route, a
tool-use round trip, count_tokens, prompt caching with cache_control, and
the typed exceptions for 401, 402 and 429. Prints one line per check and
`N passed, N failed`."""
import sys

import anthropic
from harness import run_checks
from anthropic import Anthropic

base, key, broke_key, slow_key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
client = Anthropic(base_url=base, api_key=key, max_retries=0)


def create(model):
    def run():
        m = client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "hello"}])
        assert m.content[0].text.strip().endswith("hello"), m
        assert m.model == model and m.usage.output_tokens > 0, m
    return run


def stream(model):
    def run():
        with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hello there"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert "hello there" in text, text
        assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final
    return run


def tool_round_trip(model):
    def run():
        tools = [{"name": "weather", "description": "the weather", "input_schema": {"type": "object",
                  "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        first = client.messages.create(model=model, max_tokens=50, messages=messages, tools=tools)
        call = next(b for b in first.content if b.type == "tool_use")
        assert first.stop_reason == "tool_use" and call.input == {"city": "Paris"}, first
        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}]}]
        second = client.messages.create(model=model, max_tokens=50, messages=messages, tools=tools)
        assert "21 C" in second.content[0].text, second
    return run


def count_tokens():
    n = client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "count me"}])
    assert n.input_tokens == 42, n


def prompt_caching():
    m = client.messages.create(model="claude", max_tokens=50,
                               system=[{"type": "text", "text": "a long system prompt", "cache_control": {"type": "ephemeral"}}],
                               messages=[{"role": "user", "content": "hello"}])
    assert m.usage.cache_read_input_tokens == 1000, m.usage


def errors():
    try:
        Anthropic(base_url=base, api_key="tg_wrong", max_retries=0).messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a wrong key must be refused")
    except anthropic.AuthenticationError:
        pass
    try:
        Anthropic(base_url=base, api_key=broke_key, max_retries=0).messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an empty wallet must be refused")
    except anthropic.APIStatusError as e:
        assert e.status_code == 402 and e.body["error"]["type"] == "billing_error", (e.status_code, e.body)
    slow = Anthropic(base_url=base, api_key=slow_key, max_retries=0)
    try:
        for _ in range(3):
            slow.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a key over its rpm must be refused")
    except anthropic.RateLimitError as e:
        assert e.response.headers.get("retry-after"), e.response.headers


run_checks([("messages.create (anthropic route)", create("claude")),
           ("messages.create (openai route, translated)", create("gpt")),
           ("messages.stream (anthropic route)", stream("claude")),
           ("messages.stream (openai route, translated)", stream("gpt")),
           ("tool use round trip (anthropic route)", tool_round_trip("claude")),
           ("tool use round trip (openai route, translated)", tool_round_trip("gpt")),
           ("messages.count_tokens", count_tokens), ("prompt caching", prompt_caching),
           ("401 / 402 / 429 exceptions", errors)])
