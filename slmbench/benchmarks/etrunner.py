"""The executorch backend vs ExecuTorch's own runner on the same program (`slmbench overhead --executorch-runner`).

ExecuTorch ships no standalone benchmark binary in its wheel; its reference for LLM speed is the C++ `TextLLMRunner`
(`executorch.extension.llm.runner`, the runner its Android/iOS demo apps and `llama_main` use), which reports its
own stats: prompt eval time, time to first token, and generation time. Here both run the same `.pte` (the backend's
cached "last-logits" program) in one process, alternating backend/runner each round, same prompt tokens, greedy,
same number of new tokens:
- backend: prefill = prompt tokens / time of one forward over them; decode = (n - 1) / (last token - first token);
- runner:  prefill = prompt_tokens / (prompt_eval_end - inference_start); decode = generated_tokens (which leaves
  out the first) / (inference_end - first_token) — the same definitions on its own millisecond clock.
The prompt goes to the runner as text decoded from the same ids (its tokenizer re-encodes it; the token count it
reports is printed, so a difference is visible).
"""
from __future__ import annotations

import json
import os
import statistics
import time


def _backend_once(eng, ids: list[int], gen: int) -> dict:
    from ..contracts import TokenClock
    t0 = time.perf_counter()
    eng.prefill(ids)
    pre = time.perf_counter() - t0
    clock = TokenClock()
    t0 = time.perf_counter()
    eng.generate(ids, gen, clock)
    ts = clock.times
    return {"prefill_tok_s": len(ids) / pre, "ttft_ms": (ts[0] - t0) * 1e3,
            "decode_tok_s": (gen - 1) / (ts[-1] - ts[0])}


def _runner_once(runner, prompt: str, n_ids: int, gen: int) -> dict:
    from executorch.extension.llm.runner import GenerationConfig
    got: dict = {}
    runner.reset()
    runner.generate(prompt, GenerationConfig(max_new_tokens=gen, temperature=0.0, echo=False, seq_len=n_ids + gen + 16),
                    stats_callback=lambda s: got.update(json.loads(s.to_json_string())))
    pre_ms = got["prompt_eval_end_ms"] - got["inference_start_ms"]
    gen_ms = got["inference_end_ms"] - got["first_token_ms"]
    # the runner's generated_tokens leaves out the first token (it comes from the prompt pass): n - 1 over the
    # time after the first token, the backend's definition
    return {"prefill_tok_s": got["prompt_tokens"] / pre_ms * 1e3,
            "ttft_ms": got["first_token_ms"] - got["inference_start_ms"],
            "decode_tok_s": got["generated_tokens"] / gen_ms * 1e3,
            "prompt_tokens": got["prompt_tokens"], "generated": got["generated_tokens"] + 1}


def compare(eng, tokenizer_json, prompt: int, gen: int, rounds: int, bandwidth_gbs: float | None) -> dict:
    from executorch.extension.llm.runner import TextLLMRunner
    ids = eng.prompt_ids(prompt)
    text = eng.tokenizer.decode(ids)
    runner = TextLLMRunner(str(eng.pte), str(tokenizer_json))
    _backend_once(eng, ids, gen), _runner_once(runner, text, len(ids), gen)  # warm-up
    b, r = [], []
    for i in range(rounds):
        for arm in (("b", "r") if i % 2 == 0 else ("r", "b")):
            if arm == "b":
                b.append(_backend_once(eng, ids, gen))
            else:
                r.append(_runner_once(runner, text, len(ids), gen))
    med = lambda rows, k: statistics.median(x[k] for x in rows)
    out = {"level": eng.variant.quantization, "pte": str(eng.pte), "rounds": rounds, "prompt": len(ids), "gen": gen,
           "runner_prompt_tokens": r[0]["prompt_tokens"], "runner_generated": r[0]["generated"],
           "threads": eng.adapter.threads, "load_avg": os.getloadavg()}
    for k in ("prefill_tok_s", "ttft_ms", "decode_tok_s"):
        out[f"slmbench_{k}"], out[f"runner_{k}"] = med(b, k), med(r, k)
    out["decode_ratio"] = statistics.median(x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(b, r))
    out["prefill_ratio"] = statistics.median(x["prefill_tok_s"] / y["prefill_tok_s"] for x, y in zip(b, r))
    bpt = eng.weight_bytes_per_token()
    out["weights_per_token_bytes"] = bpt
    if bandwidth_gbs:
        out["roofline_tok_s"] = bandwidth_gbs * 1e9 / bpt
        out["slmbench_roofline_frac"] = out["slmbench_decode_tok_s"] / out["roofline_tok_s"]
        out["runner_roofline_frac"] = out["runner_decode_tok_s"] / out["roofline_tok_s"]
    return out


def format_lines(r: dict) -> list[str]:
    roof = (f"; roofline {r['roofline_tok_s']:.1f} tok/s: backend {r['slmbench_roofline_frac']:.3f}, runner "
            f"{r['runner_roofline_frac']:.3f}") if "roofline_tok_s" in r else ""
    return [(f"executorch {r['level']}: decode slmbench {r['slmbench_decode_tok_s']:.1f} vs TextLLMRunner "
            f"{r['runner_decode_tok_s']:.1f} tok/s = {r['decode_ratio']:.3f}; prefill {r['slmbench_prefill_tok_s']:.0f}"
            f" vs {r['runner_prefill_tok_s']:.0f} tok/s = {r['prefill_ratio']:.3f}; TTFT {r['slmbench_ttft_ms']:.1f} vs "
            f"{r['runner_ttft_ms']:.1f} ms{roof} (median of {r['rounds']} alternating rounds; {r['threads']} threads, "
            f"prompt {r['prompt']} tokens (runner re-encoded: {r['runner_prompt_tokens']}), {r['gen']} new tokens, "
            f"load avg {r['load_avg'][0]:.1f})")]


def measure_levels(files, adapter, levels: list[str], prompt: int = 128, gen: int = 64, rounds: int = 5,
                   progress=print) -> list[dict]:
    from ..adapters.bandwidth import ensure
    from ..backends import load_engine
    from ..plan import Variant
    bw = ensure(adapter.threads)["gbs"] if "bandwidth" in adapter.capabilities else None
    out = []
    for level in levels:
        eng = load_engine(files, Variant(backend="executorch", quantization=level), adapter, progress)
        out.append(compare(eng, files.tokenizer_dir / "tokenizer.json", prompt, gen, rounds, bw))
        del eng
    return out
