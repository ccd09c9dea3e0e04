"""A Hugging Face Hub look-alike on 127.0.0.1 for tests: real `huggingface_hub` clients talk to it over loopback.

Usage (the `hub` fixture, registered for every test file in conftest.py, points `HF_ENDPOINT`, and the
already-imported `huggingface_hub`, at the server)::

    def test_x(hub):
        hub.add_repo("org/name", {"config.json": b"{}", "model.safetensors": b"..."})
        hub.add_repo("org/data", {"train.json": b"[]"}, repo_type="dataset")
        ...  # call code that uses huggingface_hub (in-process or as a subprocess)
        assert hub.fetched("org/name") == ["config.json", "model.safetensors"]

What it serves, as `huggingface_hub` 2.4 expects it (see its `hf_api.py`, `file_download.py`, `utils/_http.py`):

- `GET /api/{models,datasets}/{repo}[/revision/{rev}]`: repo info with `sha` and `siblings` (sizes with `?blobs=true`);
- `GET /api/{models,datasets}/{repo}/tree/{rev}[/{dir}][?recursive=true]` and `POST .../paths-info/{rev}`;
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}` and `/datasets/{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`,
  `ETag` and `Content-Length`. As on the real Hub, LFS-like files (weights, parquet, > 10 MiB) are answered with a
  302 carrying `X-Linked-Etag`/`X-Linked-Size` to a "CDN" URL on another origin (`http://localhost:PORT/cdn/...`,
  same server, no auth), where a client must not send its token; bodies support `Range` (206/416).

Errors carry the headers `hf_raise_for_status` maps to exceptions: `X-Error-Code: RepoNotFound` (404) for missing
and private repos, `GatedRepo` on file downloads of gated repos (401 without a token, 403 with a token that has no
access; the API stays public as on the real Hub), `RevisionNotFound`, `EntryNotFound`, and 401 with
`X-Error-Message: Invalid credentials in Authorization header` for unknown tokens.

Faults (`cut`, `fail`) make a file download stop after N bytes or fail, to test resuming. Every request is logged
(`requests`); `fetched()` lists the files whose bodies were served.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

# Suffixes the Hub stores in LFS (its default .gitattributes); those files get `X-Linked-*` headers and `lfs` info.
_LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".msgpack", ".h5", ".model", ".parquet")
_REPO_TYPES = {"models": "model", "datasets": "dataset"}


@dataclass
class HubRepo:
    """One repo at a single commit. `access` holds the tokens allowed to read it when it is gated or private."""

    repo_id: str
    files: dict[str, bytes]
    repo_type: str = "model"
    gated: bool = False
    private: bool = False
    access: set[str] = field(default_factory=set)

    @property
    def sha(self) -> str:
        """A 40-hex commit id derived from the content, like a git commit hash."""
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + self.files[path] + b"\0")
        return digest.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(_LFS_SUFFIXES) or len(self.files[path]) > 10 * 1024 * 1024

    def etag(self, path: str) -> str:
        """sha256 for LFS files, the git blob id otherwise: what the Hub puts in (X-Linked-)ETag."""
        data = self.files[path]
        if self.is_lfs(path):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def tree_entry(self, path: str) -> dict:
        data = self.files[path]
        entry: dict = {"type": "file", "path": path, "size": len(data), "oid": self.etag(path)}
        if self.is_lfs(path):
            entry["oid"] = hashlib.sha1(path.encode()).hexdigest()  # the pointer's blob id, not the content's
            entry["lfs"] = {"oid": self.etag(path), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class Fault:
    """Make the next GET of `path` in `repo_id` misbehave once: answer `status`, or stop after `after_bytes` bytes.

    With `stall`, the server keeps the connection open after `after_bytes` until `FakeHub.release()` (or stop),
    which is what a download hanging mid-file looks like to a client that the test then interrupts.
    """

    repo_id: str
    path: str
    after_bytes: int | None = None
    status: int | None = None
    stall: bool = False


@dataclass
class LoggedRequest:
    method: str
    path: str  # URL path, unquoted, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    status: int = 0
    body_bytes: int = 0  # response body bytes actually sent
    repo_id: str | None = None
    filename: str | None = None  # for resolve and CDN requests
    cdn: bool = False  # served by the "CDN" origin rather than the Hub's

    @property
    def range_start(self) -> int | None:
        value = self.headers.get("range", "")
        if not value.startswith("bytes="):
            return None
        return int(value[len("bytes=") :].split("-")[0])


class FakeHub:
    """The server state: repos, valid tokens, pending faults and the request log. Start it with `start()`."""

    def __init__(self, cdn_host: str | None = "localhost") -> None:
        """`cdn_host`: the host name of the CDN origin for LFS files; None serves them from the Hub URL directly."""
        self.cdn_host = cdn_host
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.tokens: set[str] = set()  # every token the Hub knows; others get 401 "Invalid credentials"
        self.requests: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- setup -------------------------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        gated: bool = False,
        private: bool = False,
        access: tuple[str, ...] = (),
    ) -> HubRepo:
        """Serve `files` as `repo_id`; tokens in `access` may read it when gated/private (and become valid)."""
        repo = HubRepo(repo_id, dict(files), repo_type, gated, private, set(access))
        self.repos[(repo_type, repo_id)] = repo
        self.tokens.update(access)
        return repo

    def add_token(self, token: str) -> None:
        """A valid token that has access to no gated or private repo."""
        self.tokens.add(token)

    def cut(self, repo_id: str, path: str, after_bytes: int, *, stall: bool = False) -> None:
        """The next GET of `path` sends `after_bytes` bytes of the body and then drops the connection."""
        self.faults.append(Fault(repo_id, path, after_bytes=after_bytes, stall=stall))

    def fail(self, repo_id: str, path: str, status: int) -> None:
        """The next GET of `path` answers HTTP `status` (after any earlier pending faults for it were used)."""
        self.faults.append(Fault(repo_id, path, status=status))

    def release(self) -> None:
        """Let stalled downloads end (their connection is then closed)."""
        self._released.set()

    # -- inspection ----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "call start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fetched(self, repo_id: str | None = None) -> list[str]:
        """Paths of the files whose bodies were served (fully or not), in request order, repeats included."""
        return [
            r.filename
            for r in self.requests
            if r.method == "GET" and r.filename is not None and r.status in (200, 206)
            and (repo_id is None or r.repo_id == repo_id)
        ]

    def body_requests(self, repo_id: str, path: str) -> list[LoggedRequest]:
        """The GETs of `path` that reached the body stage: served, cut, or failed by an injected fault."""
        return [
            r for r in self.requests
            if r.method == "GET" and r.repo_id == repo_id and r.filename == path and r.status not in (302, 401, 403)
        ]

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})  # each server's handler sees its own state
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _log(self, request: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, repo_id: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.repo_id == repo_id and fault.path == path:
                    self.faults.remove(fault)
                    return fault
        return None


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # -- routing ---------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        # Split before unquoting: a revision like "refs%2Fpr%2F1" is one segment.
        parts = [unquote(p) for p in split.path.split("/") if p]
        self.entry = LoggedRequest(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        body = b""
        if self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if parts[:1] == ["cdn"] and len(parts) >= 6:  # /cdn/{type}/{org}/{name}/{commit}/{path}
                self._cdn(parts[1], "/".join(parts[2:4]), parts[4], "/".join(parts[5:]))
            elif parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in _REPO_TYPES:
                self._api(_REPO_TYPES[parts[1]], parts[2:], body)
            elif len(parts) >= 5 and parts[0] == "datasets" and parts[3] == "resolve":
                self._resolve("dataset", "/".join(parts[1:3]), parts[4], "/".join(parts[5:]))
            elif len(parts) >= 4 and parts[2] == "resolve":
                self._resolve("model", "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            else:
                raise _HubError(404, "Not found")
        except _HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._send(e.status, json.dumps({"error": e.message}).encode(), "application/json", headers)
        finally:
            self.hub._log(self.entry)

    def _api(self, repo_type: str, parts: list[str], body: bytes) -> None:
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        self.entry.repo_id = repo_id
        repo = self._repo(repo_type, repo_id)
        if not rest or rest[0] == "revision":
            self._check_revision(repo, rest[1] if len(rest) > 1 else "main")
            self._json(self._info(repo))
        elif rest[0] == "tree" and len(rest) >= 2:
            self._check_revision(repo, rest[1])
            recursive = self.entry.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            self._json(_tree(repo, "/".join(rest[2:]), recursive))
        elif rest[0] == "paths-info" and len(rest) >= 2 and self.command == "POST":
            self._check_revision(repo, rest[1])
            wanted = parse_qs(body.decode()).get("paths", [])
            self._json([e for e in _tree(repo, "", recursive=True) if e["path"] in wanted])
        else:
            raise _HubError(404, "Not found")

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        self.entry.repo_id, self.entry.filename = repo_id, path
        repo = self._repo(repo_type, repo_id)
        self._check_revision(repo, revision)
        if path not in repo.files:
            raise _HubError(404, "Entry not found", "EntryNotFound", commit=repo.sha)
        if repo.gated and self._token() not in repo.access:
            if self._token() is None:
                message = (
                    f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be authenticated "
                    "to access it. Please log in."
                )
                raise _HubError(401, message, "GatedRepo")
            message = (
                f"Access to {repo_type} {repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self.hub.url}/{repo_id} to ask for access."
            )
            raise _HubError(403, message, "GatedRepo")

        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.etag(path)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            headers["X-Linked-Etag"] = f'"{repo.etag(path)}"'
            headers["X-Linked-Size"] = str(len(repo.files[path]))
            if self.hub.cdn_host is not None:
                port = self.server.server_address[1]
                cdn = f"http://{self.hub.cdn_host}:{port}/cdn/{repo_type}/{repo_id}/{repo.sha}/{quote(path)}"
                self._send(302, b"", headers={**headers, "Location": cdn})
                return
        self._send_file(repo, path, headers)

    def _cdn(self, repo_type: str, repo_id: str, commit: str, path: str) -> None:
        """A signed-URL file server: no authentication, only the content of one commit."""
        self.entry.repo_id, self.entry.filename, self.entry.cdn = repo_id, path, True
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or repo.sha != commit or path not in repo.files:
            raise _HubError(404, "Not found")
        self._send_file(repo, path, {"ETag": f'"{repo.etag(path)}"', "Accept-Ranges": "bytes"})

    def _send_file(self, repo: HubRepo, path: str, headers: dict[str, str]) -> None:
        """The body of `path`, or the part a `Range: bytes=A-[B]` asks for; injected faults apply here."""
        data = repo.files[path]
        fault = self.hub._take_fault(repo.repo_id, path) if self.command == "GET" else None
        if fault is not None and fault.status is not None:
            raise _HubError(fault.status, f"Injected HTTP {fault.status}")

        status, start, end = 200, 0, len(data)
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and "," not in range_header:
            first, _, last = range_header[len("bytes=") :].partition("-")
            start = int(first) if first else 0
            end = min(int(last) + 1, len(data)) if last else len(data)
            if start >= len(data) or start >= end:
                self._send(416, b"", headers={**headers, "Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        body = data[start:end]
        if fault is not None and fault.after_bytes is not None:
            self._send_cut(status, body, headers, fault)
        else:
            self._send(status, body, "application/octet-stream", headers)

    # -- checks ----------------------------------------------------------------------------------------------
    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def _repo(self, repo_type: str, repo_id: str) -> HubRepo:
        token = self._token()
        if token is not None and token not in self.hub.tokens:
            raise _HubError(401, "Invalid credentials in Authorization header")
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token not in repo.access):
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _check_revision(self, repo: HubRepo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _info(self, repo: HubRepo) -> dict:
        with_blobs = self.entry.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(repo.files):
            sibling: dict = {"rfilename": path}
            if with_blobs:
                entry = repo.tree_entry(path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 134}
            siblings.append(sibling)
        return {
            "_id": repo.sha[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.sha,
            "lastModified": "2023-07-18T00:00:00.000Z",
            "createdAt": "2023-07-18T00:00:00.000Z",
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(d) for d in repo.files.values()),
        }

    # -- responses -------------------------------------------------------------------------------------------
    def _json(self, obj: object) -> None:
        self._send(200, json.dumps(obj).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str = "", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.entry.status = status
        if self.command != "HEAD":
            self.wfile.write(body)
            self.entry.body_bytes = len(body)

    def _send_cut(self, status: int, body: bytes, headers: dict[str, str], fault: Fault) -> None:
        """Announce the full length, send only `fault.after_bytes` of it, then drop the connection."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = body[: fault.after_bytes]
        self.wfile.write(sent)
        self.wfile.flush()
        self.entry.status, self.entry.body_bytes = status, len(sent)
        if fault.stall:
            self.hub._released.wait(timeout=60)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _tree(repo: HubRepo, folder: str, recursive: bool) -> list[dict]:
    """Files and folders under `folder` (all levels with `recursive`), as the Hub's tree endpoint lists them."""
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    entries: dict[str, dict] = {}
    for path in sorted(repo.files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):  # the folders on the way
            if depth > 1 and not recursive:
                break
            sub = prefix + "/".join(rest[:depth])
            oid = hashlib.sha1(sub.encode()).hexdigest()
            entries.setdefault(sub, {"type": "directory", "path": sub, "size": 0, "oid": oid})
        if recursive or len(rest) == 1:
            entries[path] = repo.tree_entry(path)
    return list(entries.values())


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running `FakeHub` with `HF_ENDPOINT` pointing at it and the Hugging Face home isolated in `tmp_path`.

    Environment variables reach subprocesses; `huggingface_hub` reads most of them once, at import, so when it is
    already imported in this process its `constants` are patched to the same values too. Tokens from the
    environment or a stored login are removed so that only what a test passes is sent.
    """
    server = FakeHub().start()
    hf_home = tmp_path / "hf_home"
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_HUB_DISABLE_XET": "1",  # plain HTTP only; the server has no Xet storage
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "NO_PROXY": "127.0.0.1,localhost",  # a proxy from the environment must not intercept loopback
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_OIDC_RESOURCE", "HUGGINGFACE_CO_STAGING", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(name, raising=False)

    from huggingface_hub import constants, hf_api

    patched = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    # Module-level helpers (`huggingface_hub.list_repo_files`, `model_info`, ...) are methods of one `HfApi`
    # created at import, which copied the endpoint then.
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    try:
        yield server
    finally:
        server.stop()
