"""A loopback fake of the Hugging Face Hub API, enough for the real `huggingface_hub` client.

Speaks the read side (model info by revision, tree, paths-info, resolve with HEAD and Range)
and the write side for small files (create repo, settings, preupload answering "regular" for
every file, NDJSON commit with base64 contents). Error answers carry the `X-Error-Code`
header the client maps to `RepositoryNotFoundError` / `RevisionNotFoundError` /
`EntryNotFoundError`. Private repos are invisible to requests without the hub's token.

A test can make the Hub misbehave: `fail_queue` answers errors, `report_size` lists a false
size, and `serve` changes how one file's `resolve` GET is answered (other bytes than listed,
no `Content-Length`, or bytes dripped slowly), as a hostile or broken server would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "model_info"),
    ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    ("POST", re.compile(rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)"), "paths_info"),
    ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("GET", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("POST", re.compile(r"/api/repos/create"), "create"),
    ("PUT", re.compile(rf"/api/models/{_REPO}/settings"), "settings"),
    ("POST", re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
]


GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def is_lfs(path: str) -> bool:
    return path.endswith(".safetensors")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag_of(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_sha1(data)


@dataclass(frozen=True)
class Serving:
    """How `resolve` answers for one file instead of sending its bytes at once."""

    body: bytes | None = None  # sent instead of the file's bytes (the listing is unchanged)
    declare_length: bool = True  # False: no Content-Length; the body ends when we close
    drip_bytes: int = 0  # send the body this many bytes at a time (0: 1 MiB pieces) ...
    drip_interval_s: float = 0.0  # ... waiting this long before each piece after the first


@dataclass
class FakeRepo:
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    main: str | None = None


class HubError(Exception):
    def __init__(self, status: int, code: str | None = None):
        super().__init__(code or str(status))
        self.status, self.code = status, code


class FakeHub:
    """In-memory repos served on 127.0.0.1. Use as a context manager; `url` is the endpoint."""

    def __init__(self, token: str = "hf_fake_token") -> None:
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.fail_queue: list[int] = []  # statuses to answer to the next requests, in order
        self.requests: list[tuple[str, str]] = []
        # Optional: sizes the listings report instead of the real ones, keyed by
        # (repo_id, commit sha, path). Downloads still serve the real bytes.
        self.reported_sizes: dict[tuple[str, str, str], int] = {}
        # Optional: how resolve serves one file, keyed like reported_sizes (see `serve`).
        self.serving: dict[tuple[str, str, str], Serving] = {}
        self.closed = threading.Event()  # set on exit: dripping answers stop at once
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- test-side helpers --------------------------------------------------------------
    def add_commit(self, repo_id: str, files: dict[str, bytes], *, private: bool = False) -> str:
        """Make `files` the new head of `repo_id` (created if missing); return the commit sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, FakeRepo(private=private))
            return self._commit(repo, dict(files))

    def report_size(self, repo_id: str, commit: str, path: str, size: int) -> None:
        """Make the listings (model info, tree, paths-info) report `size` bytes for one file,
        e.g. to test size limits of many GiB without holding them; downloads are unchanged."""
        with self.lock:
            self.reported_sizes[(repo_id, commit, path)] = size

    def serve(
        self,
        repo_id: str,
        commit: str,
        path: str,
        *,
        body: bytes | None = None,
        declare_length: bool = True,
        drip_bytes: int = 0,
        drip_interval_s: float = 0.0,
    ) -> None:
        """Change how `resolve` answers for one file; listings are unchanged.

        `body` is sent instead of the file's bytes (more bytes, fewer, or other ones);
        `declare_length=False` leaves out `Content-Length`, so only the connection's close
        ends the body; `drip_bytes` and `drip_interval_s` send it slowly.
        """
        with self.lock:
            self.serving[(repo_id, commit, path)] = Serving(
                body, declare_length, drip_bytes, drip_interval_s
            )

    def _commit(self, repo: FakeRepo, files: dict[str, bytes]) -> str:
        listing = {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())}
        sha = hashlib.sha1(json.dumps([repo.main, listing, len(repo.commits)]).encode()).hexdigest()
        repo.commits[sha] = files
        repo.main = sha
        return sha

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self.closed.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- lookups ------------------------------------------------------------------------
    def repo(self, repo_id: str, authorized: bool) -> FakeRepo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "RepoNotFound")
        return repo

    def files_at(self, repo_id: str, rev: str, authorized: bool) -> tuple[str, dict[str, bytes]]:
        repo = self.repo(repo_id, authorized)
        sha = repo.main if rev == "main" else rev
        if sha is None or sha not in repo.commits:
            raise HubError(404, "RevisionNotFound")
        return sha, repo.commits[sha]


def _is_private(body: dict) -> bool | None:
    """Visibility from a create/settings body (2.x sends `visibility`, older clients `private`)."""
    if "visibility" in body:
        return body["visibility"] != "public"
    return None if body.get("private") is None else bool(body["private"])


def _entry(path: str, data: bytes, size: int | None = None) -> dict:
    size = len(data) if size is None else size
    entry = {"type": "file", "path": path, "size": size, "oid": git_blob_sha1(data)}
    if is_lfs(path):
        entry["lfs"] = {
            "oid": hashlib.sha256(data).hexdigest(),
            "size": size,
            "pointerSize": 134,
        }
    return entry


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: object, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        with fake.lock:
            fake.requests.append((self.command, split.path))
            failure = fake.fail_queue.pop(0) if fake.fail_queue else None
        if failure is not None:
            return self._json({"error": "injected"}, failure)
        authorized = self.headers.get("Authorization") == f"Bearer {fake.token}"
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(split.path)
            if method == self.command and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    with fake.lock:
                        reply = getattr(self, f"_{name}")(params, parse_qs(split.query), authorized)
                except HubError as err:
                    headers = {"X-Error-Code": err.code} if err.code else {}
                    body = json.dumps({"error": err.code or "error"}).encode()
                    return self._send(
                        err.status, body, {**headers, "Content-Type": "application/json"}
                    )
                if reply is not None:  # a long or slow body, sent without holding the lock
                    reply()
                return
        self._json({"error": "no route"}, 404)

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    # -- read side ----------------------------------------------------------------------
    def _model_info(self, p: dict, query: dict, authorized: bool) -> None:
        sha, files = self.fake.files_at(p["repo"], p.get("rev", "main"), authorized)
        siblings = []
        for path, data in sorted(files.items()):
            size = self._size(p["repo"], sha, path, data)
            sib = {"rfilename": path, "size": size, "blobId": git_blob_sha1(data)}
            if is_lfs(path):
                sib["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": size,
                    "pointerSize": 134,
                }
            siblings.append(sib)
        private = self.fake.repos[p["repo"]].private
        self._json(
            {
                "id": p["repo"],
                "modelId": p["repo"],
                "sha": sha,
                "private": private,
                "siblings": siblings,
            }
        )

    def _size(self, repo_id: str, sha: str, path: str, data: bytes) -> int:
        return self.fake.reported_sizes.get((repo_id, sha, path), len(data))

    def _tree(self, p: dict, query: dict, authorized: bool) -> None:
        sha, files = self.fake.files_at(p["repo"], p["rev"], authorized)
        prefix = p.get("path", "").strip("/")
        self._json(
            [
                _entry(k, v, self._size(p["repo"], sha, k, v))
                for k, v in sorted(files.items())
                if k.startswith(prefix)
            ]
        )

    def _paths_info(self, p: dict, query: dict, authorized: bool) -> None:
        sha, files = self.fake.files_at(p["repo"], p["rev"], authorized)
        form = parse_qs(self._body().decode())
        self._json(
            [
                _entry(k, files[k], self._size(p["repo"], sha, k, files[k]))
                for k in form.get("paths", [])
                if k in files
            ]
        )

    def _resolve(self, p: dict, query: dict, authorized: bool) -> None:
        sha, files = self.fake.files_at(p["repo"], p["rev"], authorized)
        if p["path"] not in files:
            raise HubError(404, "EntryNotFound")
        data = files[p["path"]]
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag_of(p["path"], data)}"',
            "Accept-Ranges": "bytes",
        }
        serving = self.fake.serving.get((p["repo"], sha, p["path"]))
        if serving is not None:
            return lambda: self._send_served(serving, data, headers)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match and self.command == "GET":
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers)
        headers["Content-Length"] = len(data)
        self._send(200, data, headers)

    def _send_served(self, serving: Serving, data: bytes, headers: dict) -> None:
        body = data if serving.body is None else serving.body
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, str(value))
        if serving.declare_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        step = serving.drip_bytes or 1 << 20
        try:
            for start in range(0, len(body), step):
                if start and serving.drip_interval_s and self.fake.closed.wait(serving.drip_interval_s):
                    return
                self.wfile.write(body[start : start + step])
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on the body, as it should

    # -- write side ---------------------------------------------------------------------
    def _create(self, p: dict, query: dict, authorized: bool) -> None:
        if not authorized:
            raise HubError(401)
        body = json.loads(self._body())
        repo_id = f"{body['organization']}/{body['name']}"
        if repo_id in self.fake.repos:
            url = f"{self.fake.url}/{repo_id}"  # the Hub repeats the url with its 409
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        repo = self.fake.repos[repo_id] = FakeRepo(private=_is_private(body) or False)
        self.fake._commit(repo, {".gitattributes": GITATTRIBUTES})  # as the Hub does
        self._json({"url": f"{self.fake.url}/{repo_id}", "name": repo_id})

    def _settings(self, p: dict, query: dict, authorized: bool) -> None:
        repo = self.fake.repo(p["repo"], authorized)
        if not authorized:
            raise HubError(401)
        body = json.loads(self._body())
        if _is_private(body) is not None:
            repo.private = bool(_is_private(body))
        self._json({})

    def _preupload(self, p: dict, query: dict, authorized: bool) -> None:
        self.fake.repo(p["repo"], authorized)
        body = json.loads(self._body())
        modes = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
            for f in body["files"]
        ]
        self._json({"files": modes})

    def _commit(self, p: dict, query: dict, authorized: bool) -> None:
        repo = self.fake.repo(p["repo"], authorized)
        if not authorized:
            raise HubError(401)
        files = dict(repo.commits[repo.main]) if repo.main else {}
        for line in self._body().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            elif item["key"] != "header":
                raise HubError(400)  # LFS and folder operations are not faked
        sha = self.fake._commit(repo, files)
        self._json({"commitUrl": f"{self.fake.url}/{p['repo']}/commit/{sha}", "commitOid": sha})
