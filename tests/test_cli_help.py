"""`--help` of the finetune and dataset-tool scripts: a whole-sentence description and every flag explained; a YAML
`--config` sets flags as the command line does."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import load_script
from lit_gpt.utils import cli


def _entries() -> dict[str, object]:
    from lit_gpt.data.dedup import dedup_dataset
    from lit_gpt.data.mix import mix_datasets
    from lit_gpt.data.scoring import score_dataset
    from lit_gpt.data.selection import select_dataset

    return {"finetune/lora.py": load_script("finetune/lora.py").Settings,
            "finetune/full.py": load_script("finetune/full.py").Settings,
            "scripts/score_dataset.py": score_dataset, "scripts/dedup_dataset.py": dedup_dataset,
            "scripts/select_dataset.py": select_dataset, "scripts/mix_datasets.py": mix_datasets}


@pytest.mark.parametrize("script", list(_entries()))
def test_help_explains_every_flag(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    entry = _entries()[script]
    source = Path(__file__).resolve().parents[1] / script
    assert f"cli({getattr(entry, '__name__')}" in source.read_text()  # the script runs exactly this entry
    with pytest.raises(SystemExit) as done:
        cli(entry, args=["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1].replace("\n", " ").strip()
    assert description.endswith("."), description  # a whole sentence, not cut after its first line
    options = re.split(r"\n  (?=--)", text.split("options:", 1)[1])[1:]
    flags = [block for block in options if not block.startswith(("--config", "--print_config", "-h"))]
    assert len(flags) >= 8
    for block in flags:
        header, _, rest = block.partition("  ")  # the flag, then its help after the column gap
        explained = re.sub(r"\(type: .*", "", " ".join((rest or block.split("\n", 1)[-1]).split()), flags=re.S)
        assert len(explained.strip()) > 10, block


def test_yaml_config_sets_flags(tmp_path: Path) -> None:
    lora = load_script("finetune/lora.py")
    config = tmp_path / "run.yaml"
    config.write_text("checkpoint_dir: checkpoints/ORG/NAME\nlearning_rate: 0.001\nlora_r: 4\norder: length\n")
    settings = cli(lora.Settings, args=["--config", str(config), "--lora_alpha", "8"])
    assert (settings.learning_rate, settings.lora_r, settings.lora_alpha, settings.order) == (1e-3, 4, 8, "length")
    assert settings.batch_size == lora.Settings(checkpoint_dir=Path("x")).batch_size == 16  # the script's default


def test_the_walkthrough_edits_are_lines_of_the_script() -> None:
    """The walkthrough tells users to edit `override_max_seq_length = None` and `max_iters` at the top of
    finetune/lora.py: both are lines there, and the Settings defaults."""
    lora = load_script("finetune/lora.py")
    source = (Path(__file__).resolve().parents[1] / "finetune" / "lora.py").read_text()
    top = source[: source.index("def setup(")]
    assert "    override_max_seq_length: int | None = None" in top and "    max_iters: int | None = None" in top
    defaults = lora.Settings(checkpoint_dir=Path("x"))
    assert defaults.override_max_seq_length is None and defaults.max_iters is None
