from pathlib import Path
import sys; sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from test_sources import lay_out_hub_cache
src = Path.home() / ".cache/slmbench/smollm2/hf-fp32"
files = {p.name: p for p in src.iterdir() if p.is_file()}
print(lay_out_hub_cache(Path("/tmp/demo17/hf/hub"), "HuggingFaceTB/SmolLM2-135M-Instruct", files))
