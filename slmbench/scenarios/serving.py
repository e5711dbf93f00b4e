"""Serving: N requests to an HTTP endpoint (backend `openai`), `concurrency` at a time, each streamed and timed —
end-to-end latency, TTFT, inter-token latency, decode tok/s — with token counts from the server's `usage`.

Every request leaves a record: a failed one is counted under its error kind (unreachable, timeout, http_429,
malformed...) with the first message of that kind as the row's note; retries that later succeeded are counted
under why they were needed (`failed_attempts`). Only when no request at all succeeded does the job fail (status `error`, one line)."""
from __future__ import annotations

import time
from collections import Counter

from pydantic import Field

from ..errors import JobError
from ..metrics import Metric
from ..stats import percentile
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import REQUESTS


class ServingParams(Params):
    prompt_tokens: int = Field(128, ge=1, le=131072)
    gen_tokens: int = Field(32, ge=1, le=65536, description="max_tokens (exact where the server honours ignore_eos)")
    requests: int = Field(8, ge=1, le=100_000)
    concurrency: int | None = Field(None, ge=1, le=256, description="None: the profile's")


@register_scenario
class Serving(Scenario):
    name, Params = 'serving', ServingParams
    requires = frozenset({REQUESTS})

    def run(self, ctx: JobContext, p: ServingParams) -> list[Metric]:
        eng = ctx.engine
        conc = p.concurrency or eng.client.s.concurrency
        text = eng.text(eng.prompt_ids(p.prompt_tokens))
        # Distinct prompts (a request number in front), so no server-side prompt cache makes later requests cheap.
        prompts = [f"{i}. {text}" for i in range(p.requests)]
        try:  # warm-up: connection, model load on lazy servers; not timed, but its retries are counted below
            warm = eng.request(eng.prompt_ids(8), 2)
        except JobError as e:
            warm = e
        t0 = time.perf_counter()
        res = eng.client.map(prompts, p.gen_tokens, conc, cache_prompt=False, **eng.no_eos)
        wall = time.perf_counter() - t0
        ok = [r for r in res if not isinstance(r, JobError)]
        bad = [r for r in res if isinstance(r, JobError)]
        kinds = Counter(getattr(e, "kind", "error") for e in bad)
        first = {k: next(e.message for e in bad if getattr(e, "kind", "error") == k) for k in kinds}
        if not ok:
            raise JobError("error", f"all {len(res)} requests failed: " +
                           "; ".join(f"{n}× {k} ({first[k]})" for k, n in kinds.items()))
        out = [Metric("requests_ok", len(ok), "requests", n=len(res), higher_is_better=True,
                      note=f"{len(ok)} of {len(res)} requests completed, {conc} in flight at once")]
        out += _failures(kinds, first, [warm, *res])
        out += _timings(ok, wall, conc)
        return out


def _failures(kinds: Counter, first: dict, replies: list) -> list[Metric]:
    out = [Metric("requests_failed", n, "requests", labels={"error": k}, higher_is_better=False, note=first[k][:300])
           for k, n in sorted(kinds.items())]
    why = Counter(w for r in replies for w in getattr(r, "retried", []))
    for k, n in sorted(why.items()):
        out.append(Metric("failed_attempts", n, "attempts", labels={"why": k}, higher_is_better=False,
                          note=f"attempts that failed with {k}, retried with backoff while attempts remained "
                          "(warm-up request included)"))
    return out


def _timings(ok: list, wall: float, conc: int) -> list[Metric]:
    """Latency and throughput of the completed requests, from the client's clock and the servers' usage."""
    out = []
    e2e = [r.e2e_s * 1000 for r in ok]
    ttft = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    out.append(Metric.from_samples("e2e_ms", e2e, "ms", higher_is_better=False,
                                   note="request sent → last byte (last attempt), client clock"))
    if ttft:
        out.append(Metric.from_samples("ttft_ms", ttft, "ms", higher_is_better=False,
                                       note="request sent → first streamed token, network and queueing included"))
    itl = [(b - a) * 1000 for r in ok for a, b in zip(r.token_times, r.token_times[1:])]
    dec = [(len(r.token_times) - 1) / (r.token_times[-1] - r.token_times[0]) for r in ok
           if len(r.token_times) > 2 and r.token_times[-1] > r.token_times[0]]
    if dec:
        out.append(Metric.from_samples("decode_tok_s", dec, "tok/s", higher_is_better=True,
                                       note="per request: (streamed events − 1) / (last − first event)"))
    for q in (50, 90, 99):
        if itl:
            out.append(Metric(f"itl_p{q}_ms", percentile(itl, q), "ms", n=len(itl), higher_is_better=False))
    pt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    ct = [r.completion_tokens for r in ok if r.completion_tokens is not None]
    src = "usage" if len(ct) == len(ok) else "streamed events"
    if len(ct) != len(ok):
        ct = [len(r.token_times) for r in ok]
    if pt:
        out.append(Metric("prompt_tokens", sum(pt) / len(pt), "tokens", n=len(pt),
                          note="mean per request, from the response's usage"))
    out.append(Metric("completion_tokens", sum(ct) / len(ct), "tokens", n=len(ct),
                      note=f"mean per request, from {src}"))
    out.append(Metric("output_tok_s", sum(ct) / wall, "tok/s", n=len(ok), higher_is_better=True,
                      note=f"all completion tokens / wall time of the batch ({conc} concurrent)"))
    return out
