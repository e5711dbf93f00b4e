"""Why does verifying g+1 tokens cost more than one decode step on this CPU? Time one target pass over k tokens
on a 128-token cache, and the model's biggest matmuls for M = 1, 2, 9 rows."""
import statistics, time, torch
from transformers import AutoModelForCausalLM
from slmbench.speculative import Runner
d = "/tmp/slmcache/smollm2/hf-fp32"
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
r = Runner(m)
ctx = list(range(1000, 1128))
def t_feed(k, reps=12):
    ts = []
    for _ in range(reps):
        r.reset(); r.feed(ctx, last_only=True)
        t0 = time.perf_counter(); r.feed(list(range(2000, 2000 + k))); ts.append(time.perf_counter() - t0)
    return statistics.median(ts[2:])
base = t_feed(1)
print(f"threads={torch.get_num_threads()} one-token step {base*1000:.1f} ms")
for k in (2, 3, 5, 9):
    t = t_feed(k); print(f"pass over {k} tokens: {t*1000:.1f} ms = {t/base:.2f} x one step")
for name, (n, kdim) in {"lm_head 49152x576": (49152, 576), "mlp up 1536x576": (1536, 576)}.items():
    W = torch.randn(n, kdim)
    for M in (1, 2, 9):
        x = torch.randn(1, M, kdim)
        with torch.inference_mode():
            for _ in range(3): torch.nn.functional.linear(x, W)
            ts = []
            for _ in range(20):
                t0 = time.perf_counter(); torch.nn.functional.linear(x, W); ts.append(time.perf_counter() - t0)
        print(f"{name} M={M}: {statistics.median(ts)*1e3:.3f} ms")
