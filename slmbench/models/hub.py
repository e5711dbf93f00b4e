"""Source `hub`: a Hugging Face Hub model id (`path: org/name`, optional `revision`), fetched through
huggingface_hub into its own cache, so models a user already downloaded with transformers are found where they are.

HF_HOME / HF_HUB_CACHE say where the cache is and HF_HUB_OFFLINE=1 forbids the network (both read when used, not at
import). Offline, an id that is not in the cache is refused at `validate`; online it is downloaded in the job, with
progress lines. Also here: `model_entry`, what a bare model argument (`slmbench bench MODEL`, lm-eval's
`pretrained=`) names."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

from ..contracts import ModelFiles, Source, register_source
from ..errors import UserError

# Weights in other formats than the one transformers loads here: never downloaded.
_IGNORE = ["*.gguf", "*.onnx", "*.onnx_data", "onnx/*", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.pth",
           "original/*", "coreml/*", "openvino/*", "*.mlpackage/*"]


def offline() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache() -> Path:
    """huggingface_hub's cache as the environment says now (its own constant is fixed at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def check_id(repo_id: str | None, file: str, field: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    if not repo_id:
        raise UserError("needs a Hugging Face Hub id (org/name)", file=file, field=field)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"not a Hugging Face Hub id: {str(e).splitlines()[0]}", file=file, field=field)
    return repo_id


def not_cached(what: str) -> str:
    return (f"{what} is not in the Hugging Face cache ({hub_cache()}) and HF_HUB_OFFLINE is set: download it where "
            "there is a network (hf download ...), point HF_HOME at a cache that has it, or unset HF_HUB_OFFLINE")


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The snapshot directory the cache holds for repo_id@revision, without any network; None if none."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache(), local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not there
        return None


def cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache
    p = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache(), revision=revision)
    return Path(p) if isinstance(p, str) else None


def progress_tqdm(progress):
    """huggingface_hub's progress bars as a few progress() lines (a job's output is a log, not a terminal)."""
    from huggingface_hub.utils import tqdm

    class Relay(tqdm):
        def __init__(self, *a, **kw):
            kw.update(file=io.StringIO())
            kw.setdefault("mininterval", 1.0)
            self._tenth = -1
            super().__init__(*a, **kw)

        def display(self, msg=None, pos=None):
            if self.total and self.unit == "B":  # bytes of one file (the outer bar counts files)
                tenth = int(10 * self.n / self.total)
                if tenth != self._tenth:
                    self._tenth = tenth
                    progress(f"downloading {self.desc or 'file'}: {self.n / 1e6:,.1f} of {self.total / 1e6:,.1f} MB")
            return True
    return Relay


def snapshot(repo_id: str, revision: str | None, trust_remote_code: bool = False, progress=print) -> Path:
    """The model's snapshot directory: from the cache, or downloaded into it (safetensors + configs + tokenizer)."""
    from huggingface_hub import snapshot_download
    if offline():
        found = cached_snapshot(repo_id, revision)
        if found is None:
            raise UserError(not_cached(repo_id), field="models.path")
        return found
    ignore = list(_IGNORE) + ([] if trust_remote_code else ["*.py"])
    from huggingface_hub import HfApi
    try:
        if any(f.endswith(".safetensors") for f in HfApi().list_repo_files(repo_id, revision=revision)):
            ignore += ["*.bin"]  # the same weights twice: take the safe format
    except Exception:  # no network: snapshot_download falls back to the cache, or says why it cannot
        pass
    progress(f"fetching {repo_id}{'@' + revision if revision else ''} from the Hugging Face Hub (cache {hub_cache()})")
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache(), ignore_patterns=ignore,
                                      tqdm_class=progress_tqdm(progress)))
    except Exception as e:  # no such repo or revision, gated, no network and not cached: the job says which
        raise UserError(f"could not fetch {repo_id}: {(str(e).splitlines() or [type(e).__name__])[0]}",
                        field="models.path")


def hub_file(repo_id: str, filename: str, revision: str | None, progress=print) -> Path:
    """One file of a Hub repo (a GGUF), from the cache or downloaded into it."""
    from huggingface_hub import hf_hub_download
    found = cached_file(repo_id, filename, revision)
    if found is not None:
        return found
    if offline():
        raise UserError(not_cached(f"{repo_id}/{filename}"), field="models.file")
    progress(f"fetching {filename} from {repo_id} on the Hugging Face Hub (cache {hub_cache()})")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache(),
                                    tqdm_class=progress_tqdm(progress)))
    except Exception as e:
        raise UserError(f"could not fetch {filename} from {repo_id}: {(str(e).splitlines() or [type(e).__name__])[0]}",
                        field="models.file")


def _check_snapshot(d: Path, repo_id: str, trust_remote_code: bool, file: str | None, field: str) -> None:
    cfg = d / "config.json"
    if not cfg.is_file():
        raise UserError(f"the cached snapshot of {repo_id} ({d}) has no config.json: not a transformers model (a "
                        "GGUF repo is `source: gguf` with `file:`)", file=file, field=f"{field}.path")
    try:
        auto_map = json.loads(cfg.read_text(encoding="utf-8")).get("auto_map")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"unreadable config.json in {d}: {e}", file=file, field=f"{field}.path")
    if auto_map and not trust_remote_code:
        raise UserError(f"{repo_id} asks to run the model's own Python code (auto_map); refused unless this model "
                        "sets trust_remote_code: true", file=file, field=f"{field}.trust_remote_code")


@register_source
class Hub(Source):
    name = "hub"
    fields = frozenset({"path", "revision", "trust_remote_code"})

    @classmethod
    def check(cls, spec, file, field, base):
        repo_id = check_id(spec.path, file, f"{field}.path")
        d = cached_snapshot(repo_id, spec.revision)
        if d is None:
            if offline():
                raise UserError(not_cached(repo_id + (f"@{spec.revision}" if spec.revision else "")), file=file,
                                field=f"{field}.path")
            return  # online: fetched in the job
        _check_snapshot(d, repo_id, spec.trust_remote_code, file, field)

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        d = snapshot(spec.path, spec.revision, spec.trust_remote_code, progress)
        _check_snapshot(d, spec.path, spec.trust_remote_code, None, "models")
        return ModelFiles(hf_dir=d, tokenizer_dir=d, origin=f"Hugging Face Hub {spec.path}@{d.name}")


def model_entry(arg: str) -> dict:
    """The suite model entry a bare model argument names: a source that needs no fields (smollm2, gemma3), a GGUF
    file, a local Hugging Face directory, a Hub id (org/name), or a GGUF in a Hub repo (org/name/file.gguf)."""
    from ..contracts import SOURCES
    p = Path(arg).expanduser()
    if arg in SOURCES.names() and not SOURCES.get(arg).fields and not p.exists():
        return {"source": arg}
    if p.is_file():
        return {"source": "gguf", "path": str(p.resolve())}
    if p.is_dir():
        return {"source": "hf", "path": str(p.resolve())}
    parts = arg.split("/")
    if not arg.startswith((".", "/", "~")) and len(parts) >= 3 and arg.endswith(".gguf"):
        return {"source": "gguf", "path": "/".join(parts[:2]), "file": "/".join(parts[2:])}
    if not arg.startswith((".", "/", "~")) and len(parts) == 2:
        check_id(arg, None, "MODEL")
        return {"source": "hub", "path": arg}
    plain = ", ".join(n for n, c in SOURCES.all().items() if not c.fields)
    raise UserError(f"{arg!r} is not a file, a directory, a Hugging Face Hub id (org/name, or org/name/file.gguf) "
                    f"or a model source ({plain})", field="MODEL")
