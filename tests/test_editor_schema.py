"""The schema in a real editor backend: yaml-language-server over stdio, as an editor drives it."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import python

ROOT = Path(__file__).parent.parent
SERVER = ROOT / "tools" / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server"
SCHEMA = ROOT / "schemas" / "policy.schema.json"

pytestmark = pytest.mark.skipif(
    not SERVER.exists() or shutil.which("node") is None,
    reason="yaml-language-server is not installed (make test runs `npm ci` in tools/)",
)


class LanguageServer:
    """A minimal LSP client: JSON-RPC with Content-Length framing over the server's stdio."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(SERVER), "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            length = 0
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(self.proc.stdout.read(length)))

    def send(self, payload: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **payload}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = self.receive(30)
            if msg.get("id") == self.next_id and "method" not in msg:
                return msg

    def receive(self, timeout: float) -> dict[str, Any]:
        msg = self.messages.get(timeout=timeout)
        if "method" in msg and "id" in msg:  # a request from the server: answer as an editor
            if msg["method"] == "workspace/configuration":
                items = msg["params"]["items"]
                result: Any = [self.settings().get(i.get("section", ""), None) for i in items]
            else:
                result = None
            self.send({"id": msg["id"], "result": result})
        return msg

    @staticmethod
    def settings() -> dict[str, Any]:
        yaml = {"validate": True, "completion": True, "schemaStore": {"enable": False}}
        return {"yaml": yaml, "": {"yaml": yaml}}

    def diagnostics(self, path: Path, text: str, want_errors: bool) -> list[dict[str, Any]]:
        """Open ``path`` with ``text`` and collect its diagnostics until they settle."""
        uri = path.resolve().as_uri()
        self.send(
            {
                "method": "textDocument/didOpen",
                "params": {
                    "textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}
                },
            }
        )
        latest: list[dict[str, Any]] | None = None
        deadline = time.monotonic() + 30
        quiet_until = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                msg = self.receive(0.2)
            except queue.Empty:
                if (
                    latest is not None
                    and time.monotonic() > quiet_until
                    and (latest or not want_errors)
                ):
                    break
                continue
            if (
                msg.get("method") == "textDocument/publishDiagnostics"
                and msg["params"]["uri"] == uri
            ):
                latest = msg["params"]["diagnostics"]
                quiet_until = time.monotonic() + 1.5
        assert latest is not None, f"no diagnostics published for {path}"
        return latest

    def close(self) -> None:
        try:
            self.request("shutdown", {})
            self.send({"method": "exit"})
            self.proc.wait(5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server() -> Any:
    ls = LanguageServer()
    init = ls.request(
        "initialize",
        {
            "processId": os.getpid(),
            "rootUri": ROOT.as_uri(),
            "capabilities": {
                "workspace": {"configuration": True},
                "textDocument": {"publishDiagnostics": {}},
            },
        },
    )
    assert "capabilities" in init["result"]
    ls.send({"method": "initialized", "params": {}})
    ls.send({"method": "workspace/didChangeConfiguration", "params": {"settings": ls.settings()}})
    yield ls
    ls.close()


def test_misspelt_key_gets_a_diagnostic(server: LanguageServer, tmp_path: Path) -> None:
    text = (
        f"# yaml-language-server: $schema={SCHEMA.as_uri()}\n"
        "version: 1\n"
        "targets:\n"
        "  myproj.train.step:\n"
        "    fullgrap: true\n"
    )
    diags = server.diagnostics(tmp_path / "typo.yaml", text, want_errors=True)
    assert diags, "the editor saw no problem in a misspelt key"
    lines = {d["range"]["start"]["line"] for d in diags}
    assert 4 in lines  # 0-based: the 'fullgrap' line
    assert any("fullgrap" in d["message"] for d in diags)


def test_bad_pattern_gets_a_diagnostic(server: LanguageServer, tmp_path: Path) -> None:
    text = (
        f"# yaml-language-server: $schema={SCHEMA.as_uri()}\n"
        "version: 1\n"
        "targets:\n"
        "  myproj..step:\n"
        "    disable: true\n"
    )
    diags = server.diagnostics(tmp_path / "pattern.yaml", text, want_errors=True)
    assert {d["range"]["start"]["line"] for d in diags} == {3}


def test_disable_with_fullgraph_gets_a_diagnostic(server: LanguageServer, tmp_path: Path) -> None:
    text = (
        f"# yaml-language-server: $schema={SCHEMA.as_uri()}\n"
        "version: 1\n"
        "targets:\n"
        "  myproj.step:\n"
        "    disable: true\n"
        "    fullgraph: true\n"
    )
    diags = server.diagnostics(tmp_path / "both.yaml", text, want_errors=True)
    assert diags, "the editor accepted disable together with fullgraph"
    assert {d["range"]["start"]["line"] for d in diags} <= {3, 4, 5}
    assert any("disable" in d["message"] or "fullgraph" in d["message"] for d in diags), diags


BUNDLED = sorted((ROOT / "policies").glob("*.yaml"))


@pytest.mark.parametrize("policy", BUNDLED, ids=lambda p: p.name)
def test_bundled_policies_have_no_diagnostics(server: LanguageServer, policy: Path) -> None:
    text = policy.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/policy.schema.json")
    assert server.diagnostics(policy, text, want_errors=False) == []


SECTION8 = {
    "nonstrict_trace",
    "dont_skip_tracing",
    "allow_in_graph",
    "assume_constant_result",
    "nested_compile_region",
    "stance",
    "dynamo_config",
}


def test_completion_offers_every_target_key(server: LanguageServer, tmp_path: Path) -> None:
    """The editor completes the per-function Dynamo controls in a target, with descriptions."""
    path = tmp_path / "complete.yaml"
    text = (
        f"# yaml-language-server: $schema={SCHEMA.as_uri()}\n"
        "version: 1\n"
        "targets:\n"
        "  myproj.step:\n"
        "    disable: {recursive: false}\n"
        "    \n"
    )
    server.diagnostics(path, text, want_errors=False)
    reply = server.request(
        "textDocument/completion",
        {"textDocument": {"uri": path.resolve().as_uri()}, "position": {"line": 5, "character": 4}},
    )
    result = reply["result"]
    items = result["items"] if isinstance(result, dict) else result
    labels = {item["label"]: item for item in items}
    assert set(labels) >= SECTION8, sorted(labels)
    described = labels["nested_compile_region"].get("documentation")
    text_of = described.get("value", "") if isinstance(described, dict) else str(described or "")
    assert "torch.compiler.nested_compile_region" in text_of


def test_suggested_policy_is_checked_through_its_modeline(
    server: LanguageServer, tmp_path: Path
) -> None:
    """``policycompile suggest`` writes a modeline the editor follows: the file as written
    has no diagnostic, and a misspelt key in it gets one (the schema was found)."""
    from tests.apply.test_suggest import BREAKS

    (tmp_path / "breaks.py").write_text(BREAKS, encoding="utf-8")
    (tmp_path / "conf").mkdir()
    done = python("-m", "policycompile", "suggest", "-o", "conf/s.yaml", "breaks.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    path = tmp_path / "conf" / "s.yaml"
    text = path.read_text(encoding="utf-8")
    assert server.diagnostics(path, text, want_errors=False) == []
    bad = text.replace("error_on_graph_break: false", "error_on_graph_brake: false", 1)
    wrong = tmp_path / "conf" / "wrong.yaml"
    diags = server.diagnostics(wrong, bad, want_errors=True)
    assert any("error_on_graph_brake" in d["message"] for d in diags), diags
