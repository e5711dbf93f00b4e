"""slmbench ⇄ lm-evaluation-harness: the model wrapper lm-eval calls, and the offline task pack it reads.

- `SlmbenchLM` (registered as lm-eval model "slmbench") is lm-eval's own HFLM around the model object an slmbench
  Engine already holds, so accuracy is scored on exactly the variant that is profiled — quantized ones included,
  which the plain `hf` wrapper cannot load.
- Task directories (the shipped pack, suites/tasks, and a suite's `include_path`) are copied once into the cache
  with `${ENV_VAR}` / `${TASK_DIR}` substituted, so YAMLs can say `${SLMBENCH_DATA_DIR}/eval/...`; `check_tasks`
  finds every data file a task list will read and fails with a UserError before any job runs.

lm-eval 0.4.13 has no plugin discovery for models, so `lm_eval --model slmbench` needs this module imported first:
`slmbench-lm-eval ...` (or `python -m slmbench.lmeval_model ...`) is lm-eval's CLI with it imported and the pack
included.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .settings import PACKAGE_DIR, REPO_DIR, cache_dir

PACK_DIRS = [PACKAGE_DIR / "data" / "tasks", REPO_DIR / "suites" / "tasks"]  # later dirs override earlier
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}  # datasets builders that read data_files
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def go_offline() -> None:
    """Data is local: never let datasets / the hub try the network (read when those modules are imported)."""
    import sys
    for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[k] = "1"
    # Modules already imported read their switch at import time: set their constants too.
    for mod, names in (("datasets.config", ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")),
                       ("huggingface_hub.constants", ("HF_HUB_OFFLINE",))):
        if mod in sys.modules:
            for n in names:
                if hasattr(sys.modules[mod], n):
                    setattr(sys.modules[mod], n, True)


# --- task directories -------------------------------------------------------------------------------------------

def materialise(src: Path) -> Path:
    """A cached copy of a task directory with ${VAR} replaced (env vars, and TASK_DIR = the file's source dir).
    Unset variables stay as written; check_tasks reports them for the tasks that need them."""
    src = src.resolve()
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    h = hashlib.sha256(str(src).encode())
    texts = {}
    for p in files:
        data = p.read_bytes()
        h.update(str(p.relative_to(src)).encode() + b"\0" + data)
        if p.suffix != ".py":
            try:
                texts[p] = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
    used = sorted({v for t in texts.values() for v in _VAR.findall(t)})
    h.update(repr([(v, os.environ.get(v) or None) for v in used]).encode())
    out = cache_dir() / "lmeval-tasks" / f"{src.name}-{h.hexdigest()[:16]}"
    if out.is_dir():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in files:
        dst = tmp / p.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if p in texts:
            env = {**os.environ, "TASK_DIR": str(p.parent)}
            dst.write_text(_VAR.sub(lambda m: env.get(m.group(1)) or m.group(0), texts[p]), encoding="utf-8")
        else:
            shutil.copyfile(p, dst)
    try:
        tmp.rename(out)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def include_dirs(extra: list[str] = (), file: str | None = None, field: str | None = None) -> list[Path]:
    """Shipped pack + suites/tasks + user directories (relative to the current directory, like lm_eval's
    --include_path), each materialised."""
    dirs = [d for d in PACK_DIRS if d.is_dir()]
    for i, d in enumerate(extra):
        p = Path(os.path.expandvars(d)).expanduser()
        if not p.is_dir():
            raise UserError(f"task directory {d!r} not found (relative paths are from {os.getcwd()})",
                            file=file, field=f"{field}.include_path[{i}]" if field else None)
        dirs.append(p)
    return [materialise(d) for d in dirs]


class _NoOverrideNotes(logging.Filter):
    def filter(self, record) -> bool:
        return "overrides existing task" not in str(record.msg)


@contextmanager
def quiet_task_loading():
    """lm-eval warns once per task a later directory redefines (~80 a run: the pack overrides lm-eval's own tasks
    and suites/tasks the pack, on purpose). Dropped while tasks load; its other warnings still show."""
    log, f = logging.getLogger("lm_eval.tasks._index"), _NoOverrideNotes()
    log.addFilter(f)
    try:
        yield
    finally:
        log.removeFilter(f)


def _index(dirs: list[Path]) -> dict:
    from lm_eval.tasks._index import TaskIndex
    with quiet_task_loading():
        return TaskIndex.build(dirs)


def leaf_configs(names: list[str], index: dict) -> dict[str, dict]:
    """task name -> resolved YAML config, for every leaf task the names (tasks, groups, tags) expand to."""
    from lm_eval.tasks._index import Kind
    out: dict[str, dict] = {}

    def walk(name: str, cfg: dict | None = None):
        e = index.get(name)
        if cfg is not None and e is None:  # an inline task in a group
            out[name] = cfg
        elif e is None:
            return
        elif e.kind == Kind.GROUP:
            for t in e.cfg.get("task", []):
                walk(t if isinstance(t, str) else t.get("task") or t.get("group"),
                     t if isinstance(t, dict) else None)
        elif e.kind == Kind.TAG:
            for t in sorted(e.tags):
                walk(t)
        else:
            out[name] = e.cfg or {}
    for n in names:
        walk(n)
    return out


def data_files(cfg: dict) -> list[str]:
    df = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if df is None:
        return []
    vals = df.values() if isinstance(df, dict) else [df]
    return [x for v in vals for x in ([v] if isinstance(v, str) else list(v))]


def check_tasks(tasks: list[str], extra_dirs: list[str] = (), file: str | None = None,
                field: str | None = None) -> bool:
    """Every task name must exist and every local data file it reads must be there. Returns True when all tasks are
    local (the built-in index of 14k tasks is consulted only for names the local directories don't have)."""
    dirs = include_dirs(extra_dirs, file, field)
    index = _index(dirs)
    unknown = [t for t in tasks if t not in index]
    if unknown:
        builtin = _index([Path(__import__("lm_eval.tasks", fromlist=["x"]).__file__).parent])
        for t in unknown:
            if t not in builtin:
                near = difflib.get_close_matches(t, list(index) + list(builtin), n=3)
                raise UserError(f"unknown lm-eval task {t!r}" + (f" (did you mean {', '.join(near)}?)" if near else
                                " (not in the task pack, include_path, or lm-eval's tasks)"),
                                file=file, field=f"{field}.tasks" if field else None)
    for name, cfg in leaf_configs([t for t in tasks if t in index], index).items():
        if cfg.get("dataset_path") not in LOCAL_BUILDERS:
            p = cfg.get("dataset_path")
            if isinstance(p, str) and p.startswith(("/", "./", "~")) and not Path(p).expanduser().exists():
                raise UserError(f"task {name}: dataset_path {p} not found", file=file,
                                field=f"{field}.tasks" if field else None)
            continue
        files = data_files(cfg)
        if not files:
            raise UserError(f"task {name}: dataset_path {cfg['dataset_path']!r} needs dataset_kwargs.data_files",
                            file=file, field=f"{field}.tasks" if field else None)
        for f in files:
            if "://" in f:
                continue
            var = _VAR.search(f)
            if var:
                raise UserError(f"task {name} reads {f}, but ${var.group(1)} is not set" +
                                (" (point it at the offline data, e.g. ../shared/data)"
                                 if var.group(1) == "SLMBENCH_DATA_DIR" else ""),
                                file=file, field=f"{field}.tasks" if field else None)
            if not Path(f).is_file():
                dd = os.environ.get("SLMBENCH_DATA_DIR")
                why = (f"SLMBENCH_DATA_DIR={dd} is not a directory" if dd and not Path(dd).is_dir()
                       else f"data file {f} not found")
                raise UserError(f"task {name}: {why}", file=file, field=f"{field}.tasks" if field else None)
    return not unknown


def task_manager(extra_dirs: list[str] = (), local_only: bool = True):
    from lm_eval.tasks import TaskManager
    with quiet_task_loading():
        return TaskManager(include_path=[str(d) for d in include_dirs(extra_dirs)], include_defaults=not local_only)


# --- the model --------------------------------------------------------------------------------------------------

def _lm_class():
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    @register_model("slmbench")
    class SlmbenchLM(HFLM):
        """HFLM on an slmbench Engine's model object. From lm-eval's CLI, as with its `hf` model: --model slmbench
        --model_args pretrained=DIR|HUB_ID|FILE.gguf|smollm2[,revision=...,dtype=float32,trust_remote_code=True]
        (or source=smollm2|hf|random|...,path=...), plus slmbench's quantization=none|int8_dynamic|...,threads=2"""

        def __init__(self, engine=None, pretrained: str | None = None, source: str | None = None,
                     path: str | None = None, revision: str | None = None, trust_remote_code: bool = False,
                     dtype: str = "fp32", quantization: str = "none", threads: int | None = None, batch_size=1,
                     device=None, max_batch_size=64, mc_scoring=None, mc_batch_tokens: int = 2048, **kw):
            # mc_scoring: grouped scoring (backends/mc_scoring.py); false = lm-eval's own per-request scoring.
            # Default from $SLMBENCH_MC_SCORING (on unless 0/false/no).
            if mc_scoring is None:
                mc_scoring = os.environ.get("SLMBENCH_MC_SCORING", "1")
            self.mc_scoring = str(mc_scoring).lower() not in ("0", "false", "no", "off")
            self.mc_batch_tokens = int(mc_batch_tokens)
            if engine is None:
                entry = _entry(pretrained, source, path, revision, trust_remote_code)
                engine = load_engine_standalone(entry, None, _DTYPES.get(str(dtype), dtype), quantization, threads)
            self.engine = engine
            # HFLM re-ties input/output embeddings; on a quantized variant that would undo (or break on) the
            # quantized head. The engine's model is already exactly the variant to score.
            engine.model.tie_weights = lambda *a, **k: None
            try:
                super().__init__(pretrained=engine.model, tokenizer=engine.tokenizer, batch_size=batch_size,
                                 max_batch_size=max_batch_size, **kw)
            finally:
                del engine.model.tie_weights

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            """lm-eval's (logprob, is_greedy) per request, in request order: each shared context encoded once
            (mc_scoring), or lm-eval's own per-request path."""
            if not self.mc_scoring or self.backend != "causal":
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            from .mc_scoring import TorchScorer, effective
            pairs = [effective(ctx, cont, self.max_length) for _, ctx, cont in requests]
            res = TorchScorer(self.model, self.device, self.mc_batch_tokens).score(pairs)
            for (key, _, _), ans in zip(requests, res):
                if key is not None:  # rolling windows come without a key (lm-eval caches those per document)
                    self.cache_hook.add_partial("loglikelihood", key, ans)
            return res

    return SlmbenchLM


_CLS = None


def lm_class():
    global _CLS
    if _CLS is None:
        _CLS = _lm_class()
    return _CLS


def from_engine(engine, batch_size=1, **kw):
    """lm-eval model for an Engine: each runtime brings its own (torch: SlmbenchLM over its model object)."""
    return engine.lm_eval_model(batch_size=batch_size, **kw)


_DTYPES = {"float32": "fp32", "auto": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # lm-eval's hf spellings


def _entry(pretrained, source, path, revision, trust_remote_code) -> dict:
    """The model entry: `pretrained` as lm-eval's hf model takes it (a directory or Hub id; here also a GGUF file
    or a source name), or slmbench's own source/path; default the real SmolLM2."""
    if pretrained is not None and source is not None:
        raise UserError("give pretrained= or source=, not both", field="--model_args")
    if pretrained is not None:
        from .models.hub import model_entry
        entry = model_entry(str(pretrained))
    else:
        entry = {"source": source or "smollm2", "path": path}
    if revision:
        entry["revision"] = revision
    if str(trust_remote_code).lower() in ("1", "true", "yes"):
        entry["trust_remote_code"] = True
    return entry


def load_engine_standalone(source: str | dict, path: str | None, dtype: str, quantization: str, threads):
    """An engine outside any suite (lm-eval's CLI). source: a source name (with path), or a whole model entry."""
    from . import models
    from .contracts import load_profile, make_adapter
    from .plan import ModelSpec, Variant
    entry = source if isinstance(source, dict) else {"source": source, "path": path}
    spec = ModelSpec(name="lm-eval", **entry)
    variant = Variant(dtype=dtype, quantization=quantization, threads=int(threads) if threads else None)
    adapter = make_adapter(load_profile("local-cpu"), variant.threads)
    adapter.setup()
    return variant.engine_cls.load(models.resolve(spec), variant, adapter)


def cli(argv: list[str] | None = None) -> int:
    """lm-eval's CLI with slmbench's model registered and the task pack (materialised) on the include path."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--include_path" in argv:
        i = argv.index("--include_path")
        extra = [argv[i + 1]]
        del argv[i:i + 2]
    dirs = include_dirs(extra)
    # lm-eval's CLI takes one --include_path (and its glob does not follow links): one copy holding them all.
    root = cache_dir() / "lmeval-tasks" / ("cli-" + hashlib.sha256(repr(dirs).encode()).hexdigest()[:12])
    if not root.is_dir():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        for i, d in enumerate(dirs):
            shutil.copytree(d, tmp / f"{i}-{d.name}")
        tmp.rename(root)
    try:
        _prefetch(argv)
        go_offline()
        lm_class()
        from lm_eval.__main__ import cli_evaluate
        sys.argv = ["lm_eval", *argv, "--include_path", str(root)]
        with quiet_task_loading():
            return cli_evaluate() or 0
    except UserError as e:  # a model that is not there: one line, exit 2, as slmbench's own commands do
        print(f"error: {e.line()}", file=sys.stderr)
        return 2


def _prefetch(argv: list[str]) -> None:
    """A Hub model is fetched into the cache before the run goes offline (the task data is local)."""
    if "--model_args" not in argv or argv.index("--model_args") + 1 >= len(argv):
        return
    args = dict(kv.split("=", 1) for kv in argv[argv.index("--model_args") + 1].split(",") if "=" in kv)
    if "pretrained" in args:
        from .models.hub import hub_file, model_entry, snapshot
        entry, say = model_entry(args["pretrained"]), (lambda m: print(m, file=sys.stderr))
        if entry["source"] == "hub":
            snapshot(entry["path"], args.get("revision"), args.get("trust_remote_code", "").lower() == "true", say)
        elif entry.get("file"):
            hub_file(entry["path"], entry["file"], args.get("revision"), say)


if __name__ == "__main__":
    raise SystemExit(cli())
