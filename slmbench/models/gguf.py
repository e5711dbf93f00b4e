"""Source `gguf`: any GGUF file — a local path (`path: model.gguf`), or a file in a Hugging Face Hub repo
(`path: org/name`, `file: model-q4_k_m.gguf`, optional `revision`). llama.cpp runs the file as it is; torch loads
it through transformers' GGUF support, converted once to a cached HF directory (`hf_dir_for`).

`read_header` reads the file's own metadata (architecture, file type, tensor table) without touching weights, so
`validate` refuses a truncated or foreign file in well under a second. gguf's GGUFReader is not used for this: it
builds one numpy array per vocabulary entry (a 262k-token vocabulary takes ~30 s on these CPUs); the value types,
tensor types and block sizes come from the gguf package."""
from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..contracts import ModelFiles, Source, register_source
from ..errors import Unsupported, UserError
from ..settings import cache_dir

_KEEP_ARRAY = 64  # arrays longer than this (vocabularies, merges) are kept as their length only


class GGUFError(ValueError):
    """Not a readable GGUF file: one line saying why."""


@dataclass
class Header:
    path: Path
    version: int
    fields: dict  # key -> value (long arrays: their length)
    tensors: list = field(default_factory=list)  # (name, ggml type name, elements, bytes)
    size: int = 0

    @property
    def arch(self) -> str:
        return str(self.fields.get("general.architecture", "?"))

    @property
    def file_type(self) -> str:
        """llama.cpp's file type (LLAMA_FTYPE_* less the prefix, e.g. MOSTLY_Q4_K_M), or '?' when unset."""
        from gguf import LlamaFileType
        ft = self.fields.get("general.file_type")
        try:
            return LlamaFileType(int(ft)).name
        except (TypeError, ValueError):
            return "?" if ft is None else str(ft)

    @property
    def level(self) -> str | None:
        """The file type as a slmbench llama.cpp level (q4_k_m, f16, ...), None if it has no name there."""
        from ..quant.gguf import LEVELS
        return next((k for k, v in LEVELS.items() if v == self.file_type), None)

    @property
    def params(self) -> int:
        return sum(t[2] for t in self.tensors)

    def tensor_types(self) -> dict:
        by: dict = {}
        for _, typ, _, nb in self.tensors:
            n, b = by.get(typ, (0, 0))
            by[typ] = (n + 1, b + nb)
        return {k: {"tensors": n, "bytes": b} for k, (n, b) in sorted(by.items())}

    def facts(self) -> dict:
        """What the job's info records about the file."""
        a = self.arch
        return {"gguf_arch": a, "gguf_name": self.fields.get("general.name"), "gguf_file_type": self.file_type,
                "gguf_params": self.params, "gguf_context_length": self.fields.get(f"{a}.context_length"),
                "gguf_sliding_window": self.fields.get(f"{a}.attention.sliding_window"),
                "tensor_types": self.tensor_types()}

    def describe(self) -> str:
        return (f"GGUF {self.path.name} ({self.arch}, {self.params / 1e6:.3g}M params, {self.file_type}, "
                f"{self.size / 1e6:.3g} MB)")


def read_header(path: str | Path) -> Header:
    """The metadata and tensor table of a GGUF file (v2/v3, little-endian); raises GGUFError."""
    from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType
    path = Path(path)
    try:
        size = path.stat().st_size
        if size < 24:
            raise GGUFError(f"not a GGUF file ({size} bytes)")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _parse(m, path, size, GGUFValueType, GGMLQuantizationType, GGML_QUANT_SIZES, GGUF_MAGIC,
                          GGUF_DEFAULT_ALIGNMENT)
    except OSError as e:
        raise GGUFError(f"unreadable: {e.strerror or e}")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _parse(m, path, size, VT, QT, QSIZES, MAGIC, ALIGN) -> Header:
    pos = 0

    def take(fmt):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > size:
            raise GGUFError(f"truncated: the header runs past the end of the file ({size:,} bytes)")
        v = struct.unpack_from(fmt, m, pos)
        pos += n
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take("<Q")
        if pos + n > size:
            raise GGUFError(f"truncated: the header runs past the end of the file ({size:,} bytes)")
        s = bytes(m[pos:pos + n]).decode("utf-8", errors="replace")
        pos += n
        return s

    def value(t):
        nonlocal pos
        if t == VT.STRING:
            return string()
        if t == VT.ARRAY:
            it, n = take("<I"), take("<Q")
            if n > _KEEP_ARRAY:  # skip without building values: a vocabulary is 10^5 strings
                if it == VT.STRING:
                    for _ in range(n):
                        k = take("<Q")  # a string's length, then its bytes
                        pos += k
                elif it in _SCALARS:
                    pos += n * struct.calcsize(_SCALARS[it])
                else:
                    raise GGUFError(f"unsupported array type {it}")
                if pos > size:
                    raise GGUFError(f"truncated: the header runs past the end of the file ({size:,} bytes)")
                return n
            return [value(it) for _ in range(n)]
        if t not in _SCALARS:
            raise GGUFError(f"unknown metadata value type {t}")
        return take(_SCALARS[t])

    if take("<I") != MAGIC:
        raise GGUFError("not a GGUF file (no GGUF magic at its start)")
    version = take("<I")
    if version not in (2, 3):
        raise GGUFError(f"GGUF version {version} is not handled (2 and 3 are; a big-endian file reads as garbage)")
    n_tensors, n_kv = take("<Q"), take("<Q")
    if n_tensors > 10**7 or n_kv > 10**7:
        raise GGUFError(f"corrupt header ({n_tensors} tensors, {n_kv} metadata keys)")
    fields = {}
    for _ in range(n_kv):
        key = string()
        fields[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        typ, off = take("<I"), take("<Q")
        try:
            qt = QT(typ)
        except ValueError:
            raise GGUFError(f"tensor {name}: unknown tensor type {typ} (newer than this gguf package)")
        n = 1
        for d in dims:
            n *= d
        block, type_size = QSIZES[qt]
        infos.append((name, qt.name, n, n * type_size // block, off))
    align = int(fields.get("general.alignment", ALIGN) or ALIGN)
    data = pos + (-pos % align)
    end = max((data + off + nb for _, _, _, nb, off in infos), default=data)
    if end > size:
        raise GGUFError(f"truncated: its tensors need {end:,} bytes, the file has {size:,} (a partial download or "
                        "copy?)")
    return Header(path, version, fields, [t[:4] for t in infos], size)


# --- the source -------------------------------------------------------------------------------------------------

def _local(spec, base: Path | None) -> Path:
    p = Path(spec.path).expanduser()
    return p if p.is_absolute() or base is None else base / p


def check_file(p: Path, file, field) -> Header:
    if p.is_dir():
        raise UserError(f"{p} is a directory, not a GGUF file (a Hugging Face model directory is `source: hf`)",
                        file=file, field=field)
    if not p.exists():
        raise UserError(f"no such file: {p}", file=file, field=field)
    try:
        return read_header(p)
    except GGUFError as e:
        raise UserError(f"{p}: {e}", file=file, field=field)


@register_source
class GGUFFile(Source):
    name = "gguf"
    fields = frozenset({"path", "file", "revision"})

    @classmethod
    def check(cls, spec, file, field, base):
        if not spec.path:
            raise UserError("source 'gguf' needs a path: a GGUF file, or a Hub repo id with `file:`", file=file,
                            field=f"{field}.path")
        if not spec.file:
            if spec.revision:
                raise UserError("revision applies to a Hub repo (with `file:`), not a local file", file=file,
                                field=f"{field}.revision")
            check_file(_local(spec, base), file, f"{field}.path")
            return
        from .hub import cached_file, check_id, offline, not_cached
        repo_id = check_id(spec.path, file, f"{field}.path")
        p = cached_file(repo_id, spec.file, spec.revision)
        if p is not None:
            check_file(p, file, f"{field}.file")
        elif offline():
            raise UserError(not_cached(f"{repo_id}/{spec.file}"), file=file, field=f"{field}.file")

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        if spec.file:
            from .hub import hub_file
            p, where = hub_file(spec.path, spec.file, spec.revision, progress), f" from {spec.path}"
        else:
            p, where = _local(spec, None), ""
        h = check_file(p, None, "models.path")
        return ModelFiles(gguf_path=p, origin=h.describe() + where)


# --- torch: the file converted once to a Hugging Face directory ------------------------------------------------

def _transformers_arch(arch: str) -> str:
    return {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "t5encoder": "t5"}.get(arch, arch)


def file_key(p: Path) -> str:
    """Cheap identity of a file (path, size, mtime): a cache key, not a content hash of 250 MB."""
    st = p.stat()
    return hashlib.sha256(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def hf_dir_for(path: Path, progress=print) -> tuple[Path, float]:
    """The GGUF dequantized to an fp32 safetensors directory with its tokenizer (transformers' GGUF loader), built
    once. Returns (dir, seconds spent building now). Unsupported when transformers cannot load the architecture."""
    import transformers
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    path = Path(path)
    h = read_header(path)
    if _transformers_arch(h.arch) not in GGUF_SUPPORTED_ARCHITECTURES:
        known = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
        raise Unsupported(f"transformers {transformers.__version__} cannot load GGUF architecture {h.arch!r} "
                          f"(it loads {', '.join(known)})")
    out = cache_dir() / "gguf-hf" / f"{path.stem}-{file_key(path)}"
    if (out / "config.json").is_file():
        return out, 0.0
    t0 = time.perf_counter()
    progress(f"converting {path.name} to safetensors with transformers (once)")
    try:
        save_as_hf(path, out)
    except Unsupported as e:
        raise Unsupported(f"{e.message} ({h.arch})")
    return out, time.perf_counter() - t0


def save_as_hf(path: Path, out: Path) -> None:
    """transformers' GGUF loader, dequantized to fp32, saved atomically as a safetensors directory at `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype="float32")
    except Exception as e:  # transformers (and tokenizers) refuse a GGUF they cannot map with many types
        why = (str(e).splitlines() or [type(e).__name__])[0][:300]
        raise Unsupported(f"transformers could not load {path.name}: {why}")
    model.hf_quantizer = None  # a GGUF-loaded model carries a quantizer that save_pretrained refuses
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".hf-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
