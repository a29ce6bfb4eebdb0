"""GitHub's REST API for the one question the deploy gate asks (scripts/deploy_gate.py `ci_succeeded_on`): the
successful ci.yml runs of a commit. A stand-in over real HTTP on 127.0.0.1, because GitHub cannot exist here; it
records every request (path and headers) so tests can check what the gate asked and how it authenticated."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse


class FakeGitHubApi:
    """`with FakeGitHubApi(runs={sha: 1}) as api:` serves at `api.url`; `total_count` is `runs.get(sha, 0)` (the
    successful ci push runs of that commit); `api.asked` holds (path, query, headers) of every request. With `status`
    (e.g. 401) it answers as GitHub does when the token is refused."""

    def __init__(self, runs: dict[str, int] | None = None, status: int = 200):
        self.runs = dict(runs or {})
        self.status = status
        self.asked: list[tuple[str, dict[str, str], dict[str, str]]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path, _, query = self.path.partition("?")
                fields = dict(urllib.parse.parse_qsl(query))
                api.asked.append((path, fields, dict(self.headers)))
                runs = {"total_count": api.runs.get(fields.get("head_sha", ""), 0), "workflow_runs": []}
                answer = runs if api.status == 200 else {"message": "Bad credentials"}
                body = json.dumps(answer).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeGitHubApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
