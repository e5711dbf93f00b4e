"""Cloud: any OpenAI-compatible HTTP endpoint as a device (adapter `cloud`); its runtime is backends/openai.py.

A profile (devices/<name>.yaml, `adapter: cloud`) holds the endpoint under `extra:` (see CloudSettings): base URL
(or the name of an environment variable that overrides it), served model, the NAME of the environment variable
holding the API key, timeouts, retries, concurrency. The key itself is read from os.environ at the moment a
request is sent and is never stored on an object, written to a row, a log, a manifest or an error message
(`redact` scrubs it from anything the server echoes back).

Requests stream (server-sent events) so that the first token, every later token and the end are timestamped;
token counts come from the response's `usage`. 429 and 5xx are retried with exponential backoff (Retry-After
honoured); connection failures and timeouts too; a malformed body is not retried (it will not get better) and is
reported as such. stdlib http.client: a readline per event, so no client-side buffering delays a timestamp.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from ..errors import JobError, Unsupported
from ..contracts import Adapter, register_adapter
from ..contracts.adapter import ENDPOINT
from . import host_info


class CloudSettings(BaseModel):
    """`extra:` of a cloud profile."""
    model_config = ConfigDict(extra="forbid")
    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 (the part before /completions)")
    base_url_env: str | None = Field("SLMBENCH_CLOUD_BASE_URL", description="env var that overrides base_url")
    model: str | None = Field(None, description="served model name; None: the first listed by GET /models")
    api_key_env: str | None = Field(None, description="NAME of the env var holding the key (never the key)")
    price: str | None = Field(None, description="'<provider>/<model>' in devices/cloud/*.yaml")
    stands_in_for: str | None = Field(None, description="free text: what this endpoint plays in a report")
    same_weights_as: dict = Field(default_factory=dict, description="{model:, variant knobs...}: a device "
                                  "variant that runs the identical weights (its quality applies here)")
    timeout_s: float = Field(60, gt=0, description="whole request, first byte to last")
    read_timeout_s: float = Field(30, gt=0, description="longest silence between two bytes")
    connect_timeout_s: float = Field(5, gt=0)
    retries: int = Field(3, ge=0, le=20, description="extra attempts after the first")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    max_backoff_s: float = Field(20, ge=0)
    concurrency: int = Field(1, ge=1, le=256, description="requests in flight at once")
    fixed_length: bool = Field(True, description="ask for exactly max_tokens (ignore_eos, llama.cpp servers)")
    prompt_logprobs: bool = Field(False, description="the endpoint returns correct prompt logprobs (echo): "
                                  "log-likelihood tasks can run through it")


def settings_of(profile) -> CloudSettings:
    return CloudSettings(**profile.extra)


def api_key(s: CloudSettings) -> str | None:
    return os.environ.get(s.api_key_env) if s.api_key_env else None


def redact(text: str, s: CloudSettings | None = None) -> str:
    """Anything we print or store that came from the wire or the environment passes through here."""
    key = api_key(s) if s else None
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text


def base_url(s: CloudSettings) -> str:
    url = (os.environ.get(s.base_url_env) if s.base_url_env else None) or s.base_url
    if not url:
        raise Unsupported(f"no endpoint: set extra.base_url in the profile or ${s.base_url_env}")
    return url.rstrip("/")


def public_url(url: str) -> str:
    """Scheme, host, port and path only: credentials or a `?key=` in a URL never reach a row or a log."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}{u.path}"


class EndpointError(JobError):
    """A request that failed for good. kind: unreachable | timeout | http_<status> | malformed."""

    def __init__(self, kind: str, message: str, attempts: int = 1, retried: list | None = None):
        self.kind, self.attempts, self.retried = kind, attempts, list(retried or [])
        super().__init__("error", message)


class _Retry(Exception):
    def __init__(self, kind: str, message: str, wait_s: float | None = None):
        self.kind, self.message, self.wait_s = kind, message, wait_s


@dataclass
class Reply:
    text: str = ""
    t_start: float = 0.0  # perf_counter when the request was sent (last attempt)
    token_times: list[float] = field(default_factory=list)  # one per streamed content chunk
    t_end: float = 0.0
    prompt_tokens: int | None = None  # from `usage`
    completion_tokens: int | None = None
    attempts: int = 1
    retried: list[str] = field(default_factory=list)  # why each earlier attempt failed: "429", "503", "timeout"...
    timings: dict | None = None  # llama.cpp servers' own timings, when sent
    json: object = None  # the parsed body of a non-streamed reply

    @property
    def e2e_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def ttft_s(self) -> float | None:
        return self.token_times[0] - self.t_start if self.token_times else None


class Client:
    """One endpoint. Thread-safe: every request opens its own connection."""

    def __init__(self, s: CloudSettings, log=lambda msg: None):
        self.s, self.log = s, log
        self.url = base_url(s)
        self.model = s.model

    # --- one request, with retries --------------------------------------------------------------------------
    def complete(self, prompt, max_tokens: int, stream: bool = True, **extra) -> Reply:
        body = {"model": self.model or self.served_model(), "prompt": prompt, "max_tokens": max_tokens,
                "temperature": 0, "stream": stream, **extra}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.s.fixed_length:
            body.setdefault("ignore_eos", True)
        return self._with_retries("POST", "/completions", body, stream)

    def served_model(self) -> str:
        if not self.model:
            data = self._with_retries("GET", "/models", None, False).json
            try:
                self.model = data["data"][0]["id"]
            except (KeyError, IndexError, TypeError):
                raise EndpointError("malformed", f"{public_url(self.url)}/models lists no model; set extra.model")
        return self.model

    def _with_retries(self, method, path, body, stream) -> Reply:
        retried: list[str] = []
        for attempt in range(self.s.retries + 1):
            try:
                r = self._once(method, path, body, stream)
                r.attempts, r.retried = attempt + 1, retried
                return r
            except EndpointError as e:  # not worth retrying (malformed body, 4xx): keep what happened before
                e.attempts, e.retried = attempt + 1, retried
                raise
            except _Retry as e:
                retried.append(e.kind)
                if attempt == self.s.retries:
                    kind = "unreachable" if e.kind == "connect" else e.kind
                    raise EndpointError(kind if not kind.isdigit() else f"http_{kind}",
                                        redact(f"{method} {public_url(self.url)}{path}: {e.message} "
                                               f"(gave up after {attempt + 1} attempts: {', '.join(retried)})",
                                               self.s), attempt + 1, retried)
                wait = min(self.s.max_backoff_s, e.wait_s if e.wait_s is not None else self.s.backoff_s * 2 ** attempt)
                self.log(redact(f"{e.kind}: {e.message}; retry {attempt + 1}/{self.s.retries} in {wait:.2f} s", self.s))
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _once(self, method, path, body, stream) -> Reply:
        u = urlsplit(self.url + path)
        conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        kw = {"context": ssl.create_default_context()} if u.scheme == "https" else {}
        conn = conn_cls(u.hostname, u.port, timeout=self.s.connect_timeout_s, **kw)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        key = api_key(self.s)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        reply = Reply()
        deadline = time.perf_counter() + self.s.timeout_s
        try:
            try:
                conn.connect()
            except (ConnectionError, socket.gaierror, OSError) as e:
                if isinstance(e, (socket.timeout, TimeoutError)):
                    raise _Retry("timeout", f"connect timed out after {self.s.connect_timeout_s:g} s")
                raise _Retry("connect", f"cannot connect ({type(e).__name__}: {e.strerror or e})")
            conn.sock.settimeout(self.s.read_timeout_s)
            reply.t_start = time.perf_counter()
            conn.request(method, u.path + (f"?{u.query}" if u.query else ""),
                         body=json.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            if resp.status == 429 or resp.status >= 500:
                wait = _retry_after(resp.getheader("Retry-After"))
                snippet = resp.read(300).decode("utf-8", "replace")
                raise _Retry(str(resp.status), f"HTTP {resp.status} {resp.reason}: {_one_line(snippet)}", wait)
            if resp.status >= 400:
                snippet = resp.read(300).decode("utf-8", "replace")
                raise EndpointError(f"http_{resp.status}", redact(f"{method} {public_url(self.url)}{path}: HTTP "
                                    f"{resp.status} {resp.reason}: {_one_line(snippet)}", self.s))
            ctype = resp.getheader("Content-Type") or ""
            if stream and "text/event-stream" in ctype:
                self._read_stream(resp, reply, deadline)
            else:
                raw = _read_all(resp, deadline, self.s.timeout_s)
                reply.t_end = time.perf_counter()
                data = _parse(raw, self.s)
                reply.json = data
                if path == "/completions":
                    _take_body(data, reply, self.s)
            return reply
        except (socket.timeout, TimeoutError):
            raise _Retry("timeout", f"no data for {self.s.read_timeout_s:g} s (read_timeout_s)")
        except (ConnectionError, http.client.HTTPException) as e:  # reset mid-stream, bad status line
            raise _Retry("connect", f"connection broke ({type(e).__name__}: {e})")
        finally:
            conn.close()

    def _read_stream(self, resp, reply: Reply, deadline: float) -> None:
        texts = []
        while True:
            if time.perf_counter() > deadline:
                raise _Retry("timeout", f"stream exceeded timeout_s={self.s.timeout_s:g} s")
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (": ping"), event: lines
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            now = time.perf_counter()
            ev = _parse(payload, self.s)
            try:
                if ev.get("usage"):
                    _take_usage(ev["usage"], reply)
                if ev.get("timings"):
                    reply.timings = ev["timings"]
                for ch in ev.get("choices") or []:
                    t = ch.get("text")
                    if t is None:
                        t = (ch.get("delta") or {}).get("content")
                    if t:
                        reply.token_times.append(now)
                        texts.append(str(t))
            except (AttributeError, TypeError):  # JSON, but not the shape of a completion event
                text = _one_line(payload.decode("utf-8", "replace"))
                raise EndpointError("malformed", redact(f"stream event is not a completion chunk: {text!r}", self.s))
        reply.t_end = time.perf_counter()
        reply.text = "".join(texts)

    # --- many requests ----------------------------------------------------------------------------------------
    def map(self, prompts: list, max_tokens: int, concurrency: int | None = None, **extra) -> list:
        """Every prompt gets a record: its Reply, or the EndpointError that ended it. Nothing is dropped."""
        def one(p):
            try:
                return self.complete(p, max_tokens, **extra)
            except EndpointError as e:
                return e
        with ThreadPoolExecutor(max_workers=concurrency or self.s.concurrency) as pool:
            return list(pool.map(one, prompts))


def _retry_after(v: str | None) -> float | None:
    try:
        return max(0.0, float(v)) if v else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _one_line(s: str) -> str:
    return " ".join(s.split())[:200]


def _read_all(resp, deadline: float, timeout_s: float) -> bytes:
    chunks = []
    while True:
        if time.perf_counter() > deadline:
            raise _Retry("timeout", f"response exceeded timeout_s={timeout_s:g} s")
        b = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _parse(raw: bytes, s: CloudSettings):
    try:
        return json.loads(raw)
    except ValueError:
        text = _one_line(raw.decode("utf-8", "replace"))
        raise EndpointError("malformed", redact(f"response is not JSON: {text!r}", s))


def _take_usage(u: dict, reply: Reply) -> None:
    if not isinstance(u, dict):
        raise TypeError("usage is not an object")
    reply.prompt_tokens = u.get("prompt_tokens", reply.prompt_tokens)
    reply.completion_tokens = u.get("completion_tokens", reply.completion_tokens)


def _take_body(data, reply: Reply, s: CloudSettings) -> None:
    try:
        reply.text = data["choices"][0].get("text") or (data["choices"][0].get("message") or {}).get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise EndpointError("malformed", redact(f"no choices in response: {_one_line(json.dumps(data))[:200]}", s))
    try:
        _take_usage(data.get("usage") or {}, reply)
    except TypeError:
        raise EndpointError("malformed", redact(f"usage is not an object: {_one_line(json.dumps(data))[:200]}", s))
    reply.timings = data.get("timings")


# --- the device ------------------------------------------------------------------------------------------------

@register_adapter
class CloudAdapter(Adapter):
    """Cost is read from the bill (devices/cloud price tables), not from a counter here: no energy, no memory."""
    name = "cloud"
    capabilities = frozenset({ENDPOINT})  # requests only: no weights run here, no counters to read
    torch_device = "cpu"  # tokenizer work only
    memory_kind = "none"

    def __init__(self, profile, threads: int | None = None):
        super().__init__(profile, threads or 1)
        self.settings = settings_of(profile)

    Settings = CloudSettings  # its `extra:`, validated by Adapter.check_profile

    def setup(self) -> None:
        base_url(self.settings)  # no endpoint configured: unsupported, said before any model work

    def client(self, log=lambda m: None) -> Client:
        return Client(self.settings, log)

    def info(self) -> dict:
        s = self.settings
        try:
            url = public_url(base_url(s))
        except Unsupported:
            url = None
        h = host_info()
        return {"adapter": "cloud", "profile": self.profile.name, "endpoint": url, "model": s.model,
                "api_key_env": s.api_key_env, "api_key_set": bool(api_key(s)), "price": s.price,
                "concurrency": s.concurrency, "timeout_s": s.timeout_s, "retries": s.retries,
                "client_host": {k: h[k] for k in ("hostname", "cpu_model", "logical_cpus")}}
