"""A tiny OpenAI-compatible upstream for scripts/sdk_check: answers chat
(tool calls when tools are offered and no tool result came back yet, JSON
when a json_schema is asked for), embeddings and the Responses API, with
usage, over real HTTP on loopback. Not a mock of tollgate: tollgate sits
between the official SDK and this server."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.path.endswith("/chat/completions"):
            messages = body.get("messages", [])
            if body.get("tools") and not any(m.get("role") == "tool" for m in messages):
                message = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                           "function": {"name": body["tools"][0]["function"]["name"], "arguments": json.dumps({"city": "Paris"})}}]}
                finish = "tool_calls"
            elif (body.get("response_format") or {}).get("type") == "json_schema":
                message = {"role": "assistant", "content": json.dumps({"answer": "42"})}
                finish = "stop"
            else:
                last = messages[-1].get("content") if messages else ""
                message = {"role": "assistant", "content": f"upstream saw: {last}"}
                finish = "stop"
            self.answer(200, {"id": "chatcmpl-up1", "object": "chat.completion", "created": 1, "model": body.get("model"),
                              "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage()})
        elif self.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(inputs))]
            self.answer(200, {"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": 8, "total_tokens": 8}})
        elif self.path.endswith("/responses"):
            self.answer(200, {"id": "resp_up1", "object": "response", "created_at": 1, "status": "completed", "model": body.get("model"),
                              "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                                          "content": [{"type": "output_text", "text": "hello from responses", "annotations": []}]}],
                              "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}})
        else:
            self.answer(404, {"error": {"message": f"no route {self.path}"}})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
