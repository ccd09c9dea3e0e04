"""The score files beside a prepared dataset: written by `lit_gpt.data.scoring`, read by selection
(`lit_gpt.data.selection`), `--order score` in finetune/ (`lit_gpt.batching`) and derived datasets. The layout:

    DATA_DIR/
      scores.json              what was computed, with which model and settings; one description per column
      train/ and test/
        scores.npy             a numpy structured array, one row per example in split order, columns:
                                 loss_with_prompt  float64  mean cross-entropy (nats) of the response tokens given
                                                            the prompt: the finetuning loss of this one example
                                 loss_alone        float64  mean cross-entropy of the same response tokens with no
                                                            prompt (BOS first when the tokenizer adds one)
                                 ifd               float64  loss_with_prompt / loss_alone, the Instruction-Following
                                                            Difficulty of Li et al. 2023 (arXiv:2308.12032)
                                 tokens            int64    tokens in the example (prompt + response)
                                 response_tokens   int64    tokens with a loss (label != IGNORE_INDEX)
                                 judge             float64  (with --judge_checkpoint_dir) the judge's 1-5 rating
        embeddings.npy         float32 (n, n_embd), with --embeddings: mean final hidden state over the example's
                               tokens, the cheap embedding `--policy diverse` spreads its picks over
        judge.jsonl            with --judge_checkpoint_dir: per example {"judge": rating or null, "text": what the
                               judge wrote}, so a rating can be checked by reading
        scores.partial/        only while a run is unfinished: finished batches, read back by a restarted run

NaN marks a value that is undefined: a loss over zero tokens (a response cut off entirely by max_seq_length, or,
without BOS, a one-token response alone: its only token has nothing before it to be predicted from), the IFD of
such an example, and an unparseable judge rating.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.utils import UserError, atomic_path, atomic_write_json, atomic_write_text, read_json

FORMAT = "lit_gpt.scores.v1"
SCORES_JSON_NAME = "scores.json"
SCORES_NAME = "scores.npy"
EMBEDDINGS_NAME = "embeddings.npy"
JUDGE_NAME = "judge.jsonl"
PARTIAL_NAME = "scores.partial"

COLUMNS: dict[str, str] = {
    "loss_with_prompt": "mean cross-entropy (nats) of the response tokens given the prompt",
    "loss_alone": "mean cross-entropy of the same response tokens with no prompt (BOS first if the tokenizer adds "
                  "one; without BOS the first response token is not scored)",
    "ifd": "loss_with_prompt / loss_alone: Instruction-Following Difficulty (Li et al. 2023); >= 1 means the prompt "
           "does not help predict the response",
    "tokens": "tokens in the example, prompt and response",
    "response_tokens": "tokens with a loss (label != IGNORE_INDEX)",
    "judge": "the judge model's rating, 1 to 5 (NaN: unparseable)",
}
_FLOAT_COLUMNS = ("loss_with_prompt", "loss_alone", "ifd", "judge")

SCORE_HINT = "python scripts/score_dataset.py --data_dir {data_dir} --checkpoint_dir checkpoints/ORG/NAME"


def write_scores(data_dir: Path, split: str, columns: dict[str, np.ndarray], embeddings: np.ndarray | None = None,
                 judge_text: Sequence[str] | None = None) -> None:
    """Write `split`'s scores.npy (the given COLUMNS, in COLUMNS order), and embeddings.npy / judge.jsonl when
    given, each atomically."""
    unknown = set(columns) - set(COLUMNS)
    assert not unknown, f"unknown score columns {unknown}"
    names = [name for name in COLUMNS if name in columns]
    n = len(columns[names[0]])
    table = np.zeros(n, dtype=[(name, "f8" if name in _FLOAT_COLUMNS else "i8") for name in names])
    for name in names:
        table[name] = columns[name]
    folder = Path(data_dir) / split
    with atomic_path(folder / SCORES_NAME) as tmp, tmp.open("wb") as f:
        np.save(f, table)
    if embeddings is not None:
        with atomic_path(folder / EMBEDDINGS_NAME) as tmp, tmp.open("wb") as f:
            np.save(f, np.ascontiguousarray(embeddings, dtype=np.float32))
    if judge_text is not None:
        lines = (json.dumps({"judge": None if np.isnan(v) else float(v), "text": t}, ensure_ascii=False) + "\n"
                 for v, t in zip(columns["judge"], judge_text))
        atomic_write_text(folder / JUDGE_NAME, "".join(lines))


def read_scores(data_dir: Path | str, split: str = "train") -> np.ndarray:
    """The structured array of `split`'s scores (fields: the COLUMNS that were computed), one row per example."""
    path = Path(data_dir) / split / SCORES_NAME
    if not path.is_file():
        raise UserError(f"{data_dir} has no scores ({split}/{SCORES_NAME}); compute them with "
                        + SCORE_HINT.format(data_dir=data_dir))
    return np.load(path, allow_pickle=False)


def read_score_column(dataset: TokenizedDataset, column: str) -> np.ndarray:
    """Column `column` of `dataset`'s split, one value per example (NaN where undefined, see the module docstring)."""
    scores = read_scores(dataset.data_dir, dataset.folder.name)
    if len(scores) != len(dataset):
        raise UserError(f"{dataset.folder / SCORES_NAME} has {len(scores)} rows for {len(dataset)} examples: the data "
                        "changed after scoring; score it again with " + SCORE_HINT.format(data_dir=dataset.data_dir))
    if column not in COLUMNS:
        raise UserError(f"{column!r} is not a score column; pick one of {', '.join(COLUMNS)}")
    if column not in (scores.dtype.names or ()):
        how = " --judge_checkpoint_dir checkpoints/ORG/INSTRUCT_MODEL" if column == "judge" else ""
        raise UserError(f"{dataset.data_dir} has no score column {column!r} (it has {', '.join(scores.dtype.names)}); "
                        "compute it with " + SCORE_HINT.format(data_dir=dataset.data_dir) + how)
    return np.asarray(scores[column])


def read_embeddings(dataset: TokenizedDataset) -> np.ndarray:
    """(n, n_embd) float32 example embeddings of `dataset`'s split (from `score_dataset(..., embeddings=True)`)."""
    path = dataset.folder / EMBEDDINGS_NAME
    if not path.is_file():
        raise UserError(f"{dataset.data_dir} has no embeddings ({dataset.folder.name}/{EMBEDDINGS_NAME}); compute "
                        "them with " + SCORE_HINT.format(data_dir=dataset.data_dir) + " --embeddings true")
    embeddings = np.load(path, allow_pickle=False)
    if len(embeddings) != len(dataset):
        raise UserError(f"{path} has {len(embeddings)} rows for {len(dataset)} examples; score the data again")
    return embeddings


def copy_scores(source_dir: Path, destination: Path, picks: dict[str, Sequence[int]]) -> bool:
    """Give a derived dataset the score rows of the examples it took (`picks[split]`: source indices, in the
    destination's order), so it can be ordered or selected from again. False when the source has no scores."""
    described = Path(source_dir) / SCORES_JSON_NAME
    if not described.is_file():
        return False
    info = read_json(described)
    for split, indices in picks.items():
        folder = Path(source_dir) / split
        if not (folder / SCORES_NAME).is_file():
            continue
        index = np.asarray(indices, dtype=np.int64)
        table = read_scores(source_dir, split)[index]
        embeddings = np.load(folder / EMBEDDINGS_NAME)[index] if (folder / EMBEDDINGS_NAME).is_file() else None
        judge_text = None
        if (folder / JUDGE_NAME).is_file():
            with (folder / JUDGE_NAME).open(encoding="utf-8") as f:
                texts = [json.loads(line)["text"] for line in f]
            judge_text = [texts[i] for i in index]
        write_scores(destination, split, {name: table[name] for name in table.dtype.names}, embeddings, judge_text)
        info["splits"][split]["samples"] = len(index)
    info["copied_from"] = str(source_dir)
    atomic_write_json(Path(destination) / SCORES_JSON_NAME, info)
    return True
