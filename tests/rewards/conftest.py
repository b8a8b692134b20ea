"""Fixtures for the reward tests: a chat-completions judge server on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from seekrl.rewards.judge import clear_cache


class JudgeServer:
    """A small /v1/chat/completions server. Its "model" is a rule: the verdict is "correct" when the predicted
    answer line names one of the reference answers. `mode` switches it to the failures a real server can have."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if server.mode == "slow":
                    time.sleep(1.5)
                if server.mode == "http_error":
                    self._send(500, b'{"error": "overloaded"}')
                elif server.mode == "not_json":
                    self._send(200, b"<html>502 Bad Gateway</html>")
                elif server.mode == "no_choices":
                    self._send(200, json.dumps({"object": "chat.completion", "choices": []}).encode())
                elif server.mode == "rambling":
                    self._send(200, self._completion("Well, it depends on the context."))
                else:
                    self._send(200, self._completion(server.verdict(body)))

            def _completion(self, content):
                message = {"role": "assistant", "content": content}
                payload = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
                return json.dumps(payload).encode()

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def verdict(body):
        user = body["messages"][-1]["content"]
        fields = dict(line.split(": ", 1) for line in user.splitlines() if ": " in line)
        golds = [g.lower() for g in json.loads(fields["Reference answers"])]
        predicted = fields["Predicted answer"].lower()
        return "Correct." if any(g in predicted for g in golds) else "incorrect"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge_server():
    clear_cache()
    server = JudgeServer()
    yield server
    server.close()
    clear_cache()
