"""A tiny OpenAI-compatible and Anthropic upstream for scripts/sdk_check:
answers chat (tool calls when tools are offered and no tool result came
back yet, JSON when a json_schema is asked for), embeddings, the Responses
API and Anthropic's Messages API (plain, streamed, count_tokens, cache
reads), with usage, over real HTTP on loopback. Not a mock of tollgate: tollgate sits
between the official SDK and this server."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


SPEECH_BYTES = b"ID3\x04 fake mp3 from upstream \x00\xff"


def usage(p=20, c=10):
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or every keep-alive request waits ~40 ms

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/audio/transcriptions"):
            # The form tollgate forwards: its file must be the WAV the SDK sent.
            wav_ok = b"RIFF" in raw and b'name="model"' in raw
            self.answer(200 if wav_ok else 400, {"text": "transcribed by upstream",
                                                 "usage": {"type": "duration", "seconds": 1}})
            return
        body = json.loads(raw or b"{}")
        if self.path.endswith("/chat/completions"):
            messages = body.get("messages", [])
            if body.get("tools") and not any(m.get("role") == "tool" for m in messages):
                message = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                           "function": {"name": body["tools"][0]["function"]["name"], "arguments": json.dumps({"city": "Paris"})}}]}
                finish = "tool_calls"
            elif (body.get("response_format") or {}).get("type") == "json_schema":
                # Fields in the order the schema lists them, as strict
                # structured outputs generate them: what reached this server.
                props = body["response_format"]["json_schema"].get("schema", {}).get("properties", {})
                message = {"role": "assistant", "content": json.dumps({k: "42" for k in props})}
                finish = "stop"
            else:
                last = messages[-1].get("content") if messages else ""
                message = {"role": "assistant", "content": f"upstream saw: {last}"}
                finish = "stop"
            if body.get("stream"):
                self.chat_stream(body, message, finish)
                return
            self.answer(200, {"id": "chatcmpl-up1", "object": "chat.completion", "created": 1, "model": body.get("model"),
                              "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage()})
        elif self.path.endswith("/images/generations"):
            # gpt-image-1 answers base64, with token usage and the options it used.
            n = body.get("n", 1)
            self.answer(200, {"created": 1, "data": [{"b64_json": "aW1hZ2U="} for _ in range(n)],
                              "background": body.get("background"), "output_format": body.get("output_format", "png"),
                              "usage": {"input_tokens": 9, "output_tokens": 4160, "total_tokens": 4169}})
        elif self.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(inputs))]
            self.answer(200, {"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": 8, "total_tokens": 8}})
        elif self.path.endswith("/responses"):
            self.answer(200, {"id": "resp_up1", "object": "response", "created_at": 1, "status": "completed", "model": body.get("model"),
                              "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                                          "content": [{"type": "output_text", "text": "hello from responses", "annotations": []}]}],
                              "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}})
        elif self.path.endswith("/audio/speech"):
            data = SPEECH_BYTES
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path.endswith("/moderations"):
            self.answer(200, {"id": "modr-1", "model": body.get("model"),
                              "results": [{"flagged": False, "categories": {}, "category_scores": {}}]})
        elif self.path.startswith("/v1beta/models/"):
            self.gemini(body)
        elif self.path.endswith("/v1/messages/count_tokens"):
            self.answer(200, {"input_tokens": 42})
        elif self.path.endswith("/v1/messages"):
            self.messages(body)
        else:
            self.answer(404, {"error": {"message": f"no route {self.path}"}})

    def sse(self, chunks):
        data = "".join(chunks).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def chat_stream(self, body, message, finish):
        """The answer as chat.completion.chunk objects: the text a word at a
        time, a tool call's name then its arguments, usage, [DONE]."""
        def chunk(delta, reason=None):
            return "data: " + json.dumps({"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1,
                                          "model": body.get("model"),
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}) + "\n\n"
        chunks = [chunk({"role": "assistant", "content": ""})]
        for word in (message.get("content") or "").split(" "):
            if word:
                chunks.append(chunk({"content": word + " "}))
        for i, call in enumerate(message.get("tool_calls") or []):
            chunks.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]}))
        chunks.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append("data: " + json.dumps({"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1,
                                                 "model": body.get("model"), "choices": [], "usage": usage()}) + "\n\n")
        chunks.append("data: [DONE]\n\n")
        self.sse(chunks)

    def gemini(self, body):
        """Gemini's API: generateContent, streamGenerateContent?alt=sse (a
        chunk per word, running usage, the finish reason on the last),
        countTokens; a function call when tools are offered and no function
        response came back yet."""
        if ":countTokens" in self.path:
            self.answer(200, {"totalTokens": 7})
            return
        turns = body.get("contents", [])
        parts = [p for t in turns for p in t.get("parts", [])]
        decls = [d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        if decls and not any("functionResponse" in p for p in parts):
            out = [{"functionCall": {"name": decls[0]["name"], "args": {"city": "Paris"}}}]
        else:
            results = [p["functionResponse"]["response"] for p in parts if "functionResponse" in p]
            said = json.dumps(results) if results else " ".join(p.get("text", "") for p in parts if "text" in p)
            out = [{"text": f"gemini saw: {said}"}]
        usage = {"promptTokenCount": 20, "candidatesTokenCount": 10, "thoughtsTokenCount": 5, "totalTokenCount": 35}
        whole = {"candidates": [{"content": {"role": "model", "parts": out}, "finishReason": "STOP", "index": 0}],
                 "usageMetadata": usage, "modelVersion": "gemini-up", "responseId": "r1"}
        if ":streamGenerateContent" not in self.path:
            self.answer(200, whole)
            return
        words = out[0]["text"].split(" ") if "text" in out[0] else [None]
        chunks = []
        for i, w in enumerate(words):
            last = i + 1 == len(words)
            cand = {"content": {"role": "model", "parts": [{"text": w + ("" if last else " ")}] if w is not None else out}, "index": 0}
            if last:
                cand["finishReason"] = "STOP"
            chunks.append("data: " + json.dumps({"candidates": [cand], "usageMetadata": usage if last else
                                                 {"promptTokenCount": 20, "candidatesTokenCount": i + 1},
                                                 "modelVersion": "gemini-up", "responseId": "r1"}) + "\r\n\r\n")
        self.sse(chunks)

    def messages(self, body):
        """Anthropic's Messages API: a tool call when tools are offered and
        no tool result came back yet; cache reads when a block asks for
        caching; streamed as Anthropic's event sequence."""
        turns = body.get("messages", [])
        blocks = [b for m in turns if isinstance(m.get("content"), list) for b in m["content"]]
        has_result = any(b.get("type") == "tool_result" for b in blocks)
        cached = any("cache_control" in b for b in blocks) or any(
            "cache_control" in b for b in (body.get("system") if isinstance(body.get("system"), list) else []))
        usage = {"input_tokens": 20, "output_tokens": 10, "cache_read_input_tokens": 1000 if cached else 0,
                 "cache_creation_input_tokens": 0}
        if body.get("tools") and not has_result:
            content = [{"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"], "input": {"city": "Paris"}}]
            stop = "tool_use"
        else:
            last = turns[-1].get("content") if turns else ""
            text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last if b.get("type") == "text")
            if has_result:
                text = "the tool said: " + " ".join(str(b.get("content")) for b in blocks if b.get("type") == "tool_result")
            content = [{"type": "text", "text": f"claude saw: {text}"}]
            stop = "end_turn"
        message = {"id": "msg_up1", "type": "message", "role": "assistant", "model": body.get("model"),
                   "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            self.answer(200, message)
            return
        events = [("message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                                          "usage": {**usage, "output_tokens": 1}}})]
        for i, b in enumerate(content):
            if b["type"] == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}))
                events.append(("ping", {"type": "ping"}))
                for word in b["text"].split(" "):
                    events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                           "delta": {"type": "text_delta", "text": word + " "}}))
            else:
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {**b, "input": {}}}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": 10}}))
        events.append(("message_stop", {"type": "message_stop"}))
        self.sse(f"event: {n}\ndata: {json.dumps(v)}\n\n" for n, v in events)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
