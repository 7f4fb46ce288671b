"""Google's `google-genai` Python SDK against a running tollgate, as the
Gemini CLI's SDK calls it: generate_content, generate_content_stream, a
function-calling round trip, count_tokens, the usage it reports, and the
errors it raises for 401 and 402. Prints one line per check and
`N passed, N failed`."""
import sys

from google import genai
from google.genai import errors, types
from harness import run_checks

base, key, broke_key = sys.argv[1], sys.argv[2], sys.argv[3]


def client_for(k):
    return genai.Client(api_key=k, http_options=types.HttpOptions(base_url=base, retry_options=None))


client = client_for(key)


def generate():
    r = client.models.generate_content(model="gemini", contents="hello")
    assert r.text == "gemini saw: hello", r
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.thoughts_token_count) == (20, 10, 5), u


def stream():
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model="gemini", contents="hello there"))
    assert text == "gemini saw: hello there", text


def function_calling():
    weather = types.FunctionDeclaration(name="weather", description="the weather", parameters_json_schema={
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[weather])],
                                         automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    contents = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])]
    first = client.models.generate_content(model="gemini", contents=contents, config=config)
    call = first.function_calls[0]
    assert call.name == "weather" and call.args == {"city": "Paris"}, first
    contents += [first.candidates[0].content,
                 types.Content(role="user", parts=[types.Part.from_function_response(name="weather", response={"temp": "21 C"})])]
    second = client.models.generate_content(model="gemini", contents=contents, config=config)
    assert "21 C" in second.text, second.text


def count_tokens():
    assert client.models.count_tokens(model="gemini", contents="count me").total_tokens == 7


def error_codes():
    for k, code in [("tg_wrong", 401), (broke_key, 402)]:
        refused = client_for(k)  # kept: a client closes when collected
        try:
            refused.models.generate_content(model="gemini", contents="hi")
            raise AssertionError(f"{code} expected")
        except errors.ClientError as e:
            assert e.code == code, (e.code, e)


run_checks([("models.generate_content", generate), ("models.generate_content_stream", stream),
            ("function calling round trip", function_calling), ("models.count_tokens", count_tokens),
            ("401 / 402 errors", error_codes)])
