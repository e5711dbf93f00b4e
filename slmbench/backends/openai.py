"""Backend `openai`: the Engine contract over any OpenAI-compatible HTTP endpoint (a device with adapter `cloud`).

Prompts are built with the served model's tokenizer (exact token counts); what the server counted comes back in
`usage` and is what rows report. Latency runs on streamed completions; no weights are read here, so no memory,
KV or weight facts; log-likelihood tasks only where the profile says the endpoint returns prompt logprobs."""
from __future__ import annotations

from ..adapters.cloud import CloudAdapter, CloudSettings, Client, Reply, api_key, public_url
from ..contracts import Engine, Knobs, register_backend
from ..contracts.adapter import ENDPOINT
from ..contracts.engine import GENERATE, LM_EVAL, PREFILL, REQUESTS
from ..errors import Unsupported


class OpenAIKnobs(Knobs):
    """An endpoint serves what it serves: these only restate the variant its profile declares (same_weights_as)."""
    dtype: str = "fp32"
    quantization: str = "none"


@register_backend
class CloudEngine(Engine):
    """The Engine contract over HTTP."""
    name = "openai"
    backend = "openai"
    Knobs = OpenAIKnobs
    requires_device = frozenset({ENDPOINT})
    capabilities = frozenset({GENERATE, PREFILL, LM_EVAL, REQUESTS})

    def __init__(self, tokenizer, variant, adapter, origin: str):
        self.tokenizer, self.variant, self.adapter, self.origin = tokenizer, variant, adapter, origin
        self.client = adapter.client(log=lambda m: print(m, flush=True))
        self.replies: list[Reply] = []  # every request this job made, for scenarios that report them
        self._n = 0
        # Fixed length on any OpenAI-compatible server: special tokens (EOS among them) get logit bias −100.
        ids = sorted(set(getattr(tokenizer, "all_special_ids", []) or []))[:50]
        self.no_eos = {"logit_bias": {str(i): -100 for i in ids}} if ids and adapter.settings.fixed_length else {}

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def request(self, ids: list[int], n_new: int, stream: bool = True) -> Reply:
        """A request number leads the prompt: servers that keep the previous prompt's KV cache (llama-cpp-python
        does, whatever cache_prompt says) would otherwise skip the prefill of a repeated prompt."""
        self._n += 1
        return self.send(f"[{self._n}] " + self.text(ids), n_new, stream)

    def send(self, prompt: str, n_new: int, stream: bool = True) -> Reply:
        r = self.client.complete(prompt, n_new, stream=stream, cache_prompt=False, **self.no_eos)
        self.replies.append(r)
        return r

    def prefill(self, ids: list[int], past=None):
        """One 1-token request: the server's prompt processing plus one step (and the network). No KV is kept
        between requests, so `past` is the id prefix the next request re-sends."""
        prefix = list(past or [])
        if ids:
            self.request(prefix + list(ids), 1, stream=False)
        return prefix + list(ids)

    def generate(self, ids: list[int], n_new: int, clock=None, past=None):
        r = self.request(list(ids), n_new)
        if clock is not None:
            clock.times = list(r.token_times)
        got = r.completion_tokens if r.completion_tokens is not None else len(r.token_times)
        if clock is not None and (len(r.token_times) != n_new or got != n_new):
            raise Unsupported(f"endpoint streamed {len(r.token_times)} chunks / {got} tokens for {n_new} asked: "
                              "per-token latency needs one token per event and a fixed length (scenario "
                              "`serving` reports what any endpoint returns)")
        return r

    def describe(self) -> dict:
        s = self.adapter.settings
        return {"backend": "openai", "endpoint": public_url(self.client.url), "model": self.client.model,
                "tokenizer_from": self.origin, "stands_in_for": s.stands_in_for, "price": s.price}

    @classmethod
    def load(cls, files, variant, adapter, progress=print) -> "CloudEngine":
        return _load(files, variant, adapter, progress)

    def lm_eval_model(self, batch_size=1, **_):
        """lm-eval's own OpenAI-compatible model on this endpoint (generation tasks; log-likelihood tasks only
        where the profile says the endpoint returns correct prompt logprobs)."""
        return lm_eval_model(self.adapter.settings, self.client, self.tokenizer, batch_size)


def lm_eval_model(s: CloudSettings, client: Client, tokenizer, batch_size=1):
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class EndpointLM(LocalCompletionsAPI):
        @property
        def api_key(self):  # from our env var at call time; lm-eval would read OPENAI_API_KEY
            return api_key(s) or ""

        def loglikelihood(self, requests, **kw):
            if not s.prompt_logprobs:
                raise Unsupported(f"{public_url(client.url)} returns no (correct) prompt logprobs: log-likelihood "
                                  "tasks cannot run through it; run generation tasks, or the model on a device")
            return super().loglikelihood(requests, **kw)

    lm = EndpointLM(base_url=f"{client.url}/completions", model=client.served_model(),
                    tokenizer_backend=None, tokenized_requests=False, num_concurrent=s.concurrency,
                    max_retries=s.retries + 1, timeout=int(s.timeout_s), batch_size=1,
                    eos_string=getattr(tokenizer, "eos_token", None))
    return lm


def _load(files, variant, adapter, progress=print) -> CloudEngine:
    if not isinstance(adapter, CloudAdapter):
        raise Unsupported("backend 'openai' runs on a cloud device (a profile with adapter: cloud)")
    # The endpoint serves what it serves: a knob may only restate what the profile declares it serves.
    serves = adapter.settings.same_weights_as
    changed = {k: v for k, v in variant.short().items() if k not in ("backend", "threads") and serves.get(k) != v}
    if changed:
        raise Unsupported(f"knobs {sorted(changed)} cannot apply to an endpoint (profile {adapter.profile.name} "
                          f"declares it serves {serves or 'no particular variant'})")
    if files.tokenizer_dir is None:
        raise Unsupported("backend 'openai' needs the served model's tokenizer (a model source with one)")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(files.tokenizer_dir))
    return CloudEngine(tok, variant, adapter, files.origin)

