"""ONNX Runtime GenAI artifacts: the model builder (`python -m onnxruntime_genai.models.builder`) run once per
(HF directory, precision) and cached, plus the static facts of a built graph (weight bytes, what a token reads).

The builder runs in a child process: it imports torch and transformers and peaks near 2 GB for a 135M model, none
of which belongs to the job's own load time or memory. Output goes to a temporary folder renamed into place, so a
killed build leaves no half artifact. Kept apart from the engine so onnx_genai.py stays small."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import JobError, Unsupported
from ..settings import cache_dir

# quantization knob -> builder precision (weights; CPU I/O stays fp32). int8/int4: MatMulNBits weight-only blocks.
PRECISION = {"none": "fp32", "int8": "int8", "int4": "int4"}
EXPORT_VERSION = 1  # bump when the builder call changes: invalidates cached artifacts
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2, 21: 1, 22: 1}  # onnx elem_type


def _key(hf_dir: Path, precision: str, og_version: str) -> str:
    """Cheap identity of the source: names, sizes and mtimes of its files (not a content hash), the precision, the
    builder's version and ours."""
    h = hashlib.sha256(f"{hf_dir.resolve()}|{precision}|og{og_version}|v{EXPORT_VERSION}".encode())
    for f in sorted(hf_dir.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def artifact_for(hf_dir: Path, quantization: str, progress=print) -> tuple[Path, float]:
    """(the built model folder, seconds spent building it now: 0.0 when cached)."""
    try:
        import onnxruntime_genai as og
        import onnx_ir  # noqa: F401  (the builder needs it; the wheel does not declare it)
    except ImportError as e:
        raise Unsupported(f"backend 'onnx_genai' needs onnxruntime-genai and onnx-ir "
                          f"(pip install 'slmbench[onnx]'): {e}")
    precision = PRECISION[quantization]
    out = cache_dir() / "onnx_genai" / f"{hf_dir.name}-{_key(hf_dir, precision, og.__version__)}" / precision
    if (out / "genai_config.json").is_file():
        return out, 0.0
    progress(f"onnxruntime-genai: building the {precision} CPU model (once)")
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log = tmp / "builder.log"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(tmp),
           "-p", precision, "-e", "cpu", "-c", str(tmp / "hf-cache")]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    build_s = time.perf_counter() - t0
    if r.returncode != 0 or not (tmp / "genai_config.json").is_file():
        tail = [ln.strip() for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
        why = tail[-1] if tail else f"exit {r.returncode}"
        if "not supported" in why.lower() or "NotImplementedError" in why:
            raise Unsupported(f"the onnxruntime-genai {og.__version__} model builder cannot build {hf_dir.name}: {why}")
        raise JobError("error", f"onnxruntime-genai model builder failed on {hf_dir.name} ({precision}): {why} "
                                f"(log: {log})")
    shutil.rmtree(tmp / "hf-cache", ignore_errors=True)
    (tmp / "build_s.txt").write_text(f"{build_s:.2f}\n")
    if out.exists():  # another job built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return out, build_s
    os.replace(tmp, out)
    return out, build_s


def graph_facts(model_dir: Path, filename: str = "model.onnx") -> dict:
    """Weight bytes of the graph's initializers (no weights loaded), the bytes a decoded token reads (all but tables
    only gathered from: an embedding row, one rotary cos/sin row), the KV dtype and the MatMulNBits settings."""
    import onnx
    m = onnx.load(str(model_dir / filename), load_external_data=False)
    g = m.graph
    size = {}
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        size[t.name] = n * _DTYPE_BYTES.get(t.data_type, 4) if t.data_type not in (21, 22) else (n + 1) // 2
    uses: dict[str, set] = {}
    attrs = {}
    for node in g.node:
        for i, x in enumerate(node.input):
            if x in size:
                gathered = node.op_type in ("Gather", "GatherBlockQuantized") and i == 0
                uses.setdefault(x, set()).add("gather" if gathered else node.op_type)
        if node.op_type == "MatMulNBits" and not attrs:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    rotary = {n for n in size if n.endswith(("cos_cache", "sin_cache"))}
    only_gathered = {n for n, u in uses.items() if u == {"gather"}}
    total = sum(size.values())
    kv = next((i for i in g.input if i.name.startswith("past_key_values.")), None)
    kv_bytes = _DTYPE_BYTES.get(kv.type.tensor_type.elem_type, 4) if kv is not None else 4
    files = [model_dir / filename] + [model_dir / f"{filename}.data"]
    return {"weight_bytes": total,
            "weights_per_token_bytes": total - sum(size[n] for n in only_gathered | rotary),
            "file_bytes": sum(f.stat().st_size for f in files if f.is_file()),
            "kv_dtype_bytes": kv_bytes,
            "ops": sorted({n.op_type for n in g.node}),
            "matmul_nbits": {k: v for k, v in attrs.items() if k in ("bits", "block_size", "accuracy_level")}}


def hf_param_count(hf_dir: Path) -> int | None:
    """Parameters of the source model (safetensors headers, no weights read): the same weights every runtime gets,
    so the count does not depend on how a runtime stores, ties or packs them."""
    import json
    import struct
    n = 0
    for f in sorted(hf_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            hdr = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for k, v in hdr.items():
            if k != "__metadata__":
                c = 1
                for d in v["shape"]:
                    c *= d
                n += c
    return n or None
