"""Peak memory of `scripts/convert_hf_checkpoint.py` relative to the checkpoint's size on disk.

    python bench/convert_memory.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct

Make the SmolLM2 folder without internet with `python ../shared/tools/smollm2_checkpoint.py DIR` (needs
transformers, gguf and accelerate; `pip install -e ".[test]"` has them). The conversion runs on a copy of the
Hugging Face files, in a fresh process per repeat; a second process that only imports the same modules gives
the interpreter baseline measured in the same run.
"""
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_gpt.convert import TOKENIZER_FILES, hf_weight_files  # noqa: E402
from lit_gpt.utils import LIT_WEIGHTS_NAME, child_peak_rss_mb, cli, resolve_checkpoint_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(checkpoint_dir: Path, repeats: int = 3) -> None:
    """Convert a copy of `checkpoint_dir` `repeats` times and print peak RSS against size on disk.

    Args:
        checkpoint_dir: A downloaded Hugging Face folder (safetensors or .bin weights).
        repeats: Fresh processes per measurement.
    """
    source = resolve_checkpoint_dir(checkpoint_dir)
    weights = hf_weight_files(source)
    size_in = sum(f.stat().st_size for f in weights) / 2**20
    peaks, baselines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / source.name
        work.mkdir()
        for f in [*weights, *(source / n for n in ("config.json", *TOKENIZER_FILES))]:
            if f.is_file():
                shutil.copyfile(f, work / f.name)
        for _ in range(repeats):
            baselines.append(child_peak_rss_mb([sys.executable, "-c", "import lit_gpt.convert"], ROOT))
            convert = [sys.executable, "scripts/convert_hf_checkpoint.py", "--checkpoint_dir", str(work)]
            peaks.append(child_peak_rss_mb(convert, ROOT))
        size_out = (work / LIT_WEIGHTS_NAME).stat().st_size / 2**20
    peak, base = statistics.median(peaks), statistics.median(baselines)
    print(f"checkpoint          {source} ({len(weights)} weight file(s))")
    print(f"size on disk        input {size_in:,.0f} MiB, output {size_out:,.0f} MiB")
    print(f"peak RSS            {peak:,.0f} MiB (median of {repeats}; min {min(peaks):,.0f}, max {max(peaks):,.0f})")
    print(f"baseline RSS        {base:,.0f} MiB (python + torch + lit_gpt imported, nothing converted)")
    print(f"peak / input size   {peak / size_in:.2f}x")
    print(f"(peak - baseline) / output size   {(peak - base) / size_out:.2f}x")


if __name__ == "__main__":
    cli(main)
