"""Reading and writing our checkpoint folders: `lit_config.json` + `lit_model.safetensors` (+ the HF tokenizer files)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.utils import LIT_WEIGHTS_NAME, UserError, atomic_path


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write safetensors atomically: a killed run never leaves a truncated file under the final name."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})


def load_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(checkpoint_dir) / LIT_WEIGHTS_NAME
    if not path.is_file():
        raise UserError(
            f"{path} not found. Convert the Hugging Face checkpoint first: "
            f"python scripts/convert_hf_checkpoint.py --checkpoint_dir {checkpoint_dir}"
        )
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


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
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
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
