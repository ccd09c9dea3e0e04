"""Reading and writing our checkpoint folders: `lit_config.json` + `lit_model.safetensors` (+ the HF tokenizer files)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, UserError, atomic_path, read_safetensors_file


def save_weights(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write safetensors atomically: a killed run never leaves a truncated file under the final name."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": "pt", **(metadata or {})})


# Safetensors metadata key naming the command that wrote a file: its next run may write over its own output only.
WRITTEN_BY = "written_by"
# A Hugging Face checkpoint's weights: ours beside them would make a folder that loads neither
_WEIGHT_FILES = ("model*.safetensors", "pytorch_model*.bin", "*.index.json")


def check_out_dir(out_dir: Path, names: Sequence[str], marker: str, command: str, flag: str = "--out_dir") -> None:
    """Refuse to write the files `names` into `out_dir` when it holds one of them, or weights, that `command` did not
    write: another checkpoint or adapter would be overwritten or mixed with ours. A previous output of `command`
    (its `marker` file says `written_by: command`) is written over, so the same command can run again."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{flag} {out_dir} is a file; pass a folder")
    if not out_dir.is_dir():
        return
    found = sorted({p.name for p in out_dir.iterdir() if p.name in names}
                   | {p.name for pattern in _WEIGHT_FILES for p in out_dir.glob(pattern)})
    if not found:
        return
    try:
        ours = read_safetensors_file(out_dir / marker, "", tensors=False)[1].get(WRITTEN_BY) == command
    except UserError:  # missing or unreadable: not a previous output of ours
        ours = False
    if not ours:
        raise UserError(f"{flag} {out_dir} already holds {out_dir / found[0]}, which {command} did not write; pass a "
                        "new folder (nothing was written)")


def load_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(checkpoint_dir) / LIT_WEIGHTS_NAME
    if not path.is_file():
        raise UserError(
            f"{path} not found. Convert the Hugging Face checkpoint first: "
            f"python scripts/convert_hf_checkpoint.py --checkpoint_dir {checkpoint_dir}"
        )
    fix = f"convert the checkpoint again: python scripts/convert_hf_checkpoint.py --checkpoint_dir {checkpoint_dir}"
    return read_safetensors_file(path, fix)[0]


def load_model(
    checkpoint_dir: Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> GPT:
    """Build the model described by `lit_config.json` and load `lit_model.safetensors` into it.

    The model is created on the meta device and the loaded tensors are assigned, so weights are held once.
    """
    config = Config.from_checkpoint(checkpoint_dir)
    state = load_weights(checkpoint_dir)
    state = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state.items()}
    with torch.device("meta"):
        model = GPT(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # same names, other shapes: the weights of another model
        raise UserError(f"{checkpoint_dir / LIT_WEIGHTS_NAME} does not match {LIT_CONFIG_NAME} "
                        f"({str(e).splitlines()[-1].strip()}); re-run scripts/convert_hf_checkpoint.py") from None
    # a tied head is stored once, as the embedding; anything else missing or extra is a broken checkpoint
    allowed_missing = {"lm_head.weight"} if config.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise UserError(
            f"{checkpoint_dir / LIT_WEIGHTS_NAME} does not match lit_config.json: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; re-run scripts/convert_hf_checkpoint.py"
        )
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.reset_rope_cache()
    return model
