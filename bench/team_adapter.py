"""Glue between the shared LoRA harness (`../shared/bench/bench.py`) and this repo, used by `bench/peers/team.json`.

    python bench/team_adapter.py prep  --checkpoint_dir CKPT --data_file X.json --max_seq_length 512 --out DIR
    python bench/team_adapter.py steps --metrics OUT/metrics.csv --out OUT/steps.jsonl

prep: runs our `prepare()` (what `scripts/prepare_alpaca.py` runs) in this process on the Alpaca JSON file, into
DIR/prepared, and writes DIR/prep.json with the keys the harness wants: `seconds` (the `prepare()` call alone,
imports excluded, like the harness' prep_*.py), `n`, `tokens_total`, `ids_sha256` (each example's int64 ids then
b"|", in file order, as prep_hf.py hashes them). Settings chosen so that training sees exactly the harness' rows:
  - test_split_fraction 0: every row of the file is a training example, in file order (the harness keeps its
    50 validation rows in a separate file that no timed peer uses);
  - with --peer_order_seed S (what the throughput benchmark passes, for its training data only): the rows are
    first permuted so that our sampler meets them in the peers' order (see `peer_order`), so every step of
    ours trains on the same 4 examples as the same step of litgpt / hf_peft;
  - prompt_style alpaca (template + BOS, response + EOS), the same ids as litgpt / hf_peft;
  - mask_inputs false by default, as the peers train (litgpt's JSON default, copied by the HF run): the loss
    is then the same function and the step-1 loss can be checked against theirs. Masking the prompt (our
    default, `--mask_inputs true`) changes which labels are -100, not the compute;
  - incomplete_rows drop: the 15k timing file has 6 rows with an empty output, which our prepare refuses by
    default for a user's own file (litgpt and HF train on them), so `n` is 6 lower there.

steps: converts finetune/lora.py's metrics.csv (step 0 is the validation-only row; rows without train_loss are
skipped) into the harness' common per-step schema: {"step", "time_s", "loss", "tokens_padded", "tokens_real"}.
`time_s` is our `step_seconds`: batch building, forward, backward, optimizer step and the loss `float()`.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prep(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import contextlib
    import io

    import numpy as np

    from lit_gpt.data import ALPACA, prepare
    from lit_gpt.data.dataset import TokenizedDataset

    args.out.mkdir(parents=True, exist_ok=True)
    destination = args.out / "prepared"
    data_file = args.data_file
    if args.peer_order_seed is not None:
        data_file = args.out / "train_in_peer_order.json"
        data_file.write_text(json.dumps(peer_order(json.loads(args.data_file.read_text()), args.peer_order_seed,
                                                   args.team_seed), indent=1, ensure_ascii=False))
    with contextlib.redirect_stdout(io.StringIO()):  # the report card goes to stats.json as well
        start = time.perf_counter()
        stats = prepare(ALPACA, checkpoint_dir=args.checkpoint_dir, data_file=data_file,
                        destination_path=destination, max_seq_length=args.max_seq_length, prompt_style="alpaca",
                        test_split_fraction=0.0, mask_inputs=args.mask_inputs, incomplete_rows="drop")
        seconds = time.perf_counter() - start
    train = TokenizedDataset(destination, "train", None)
    if args.peer_order_seed is not None and len(train) != len(json.loads(data_file.read_text())):
        raise SystemExit("a row was dropped: the reordered file no longer lines up with the peers' sampler")
    h = hashlib.sha256()
    for i in range(len(train)):
        h.update(np.asarray(train.input_ids[train.offsets[i]:train.offsets[i + 1]], dtype=np.int64).tobytes())
        h.update(b"|")
    lengths = train.lengths
    res = {"peer": "team", "n": len(train), "seconds": seconds, "tokens_total": int(lengths.sum()),
           "max_len": int(lengths.max()), "ids_sha256": h.hexdigest(), "mask_inputs": args.mask_inputs,
           "dropped": stats.get("dropped"), "truncated_samples": stats.get("truncated_samples")}
    (args.out / "prep.json").write_text(json.dumps(res, indent=2))
    (args.out / "lengths.json").write_text(json.dumps(lengths.tolist()))
    print(json.dumps(res))


def peer_order(rows: list, sampler_seed: int, team_seed: int) -> list:
    """The rows permuted so that finetune/lora.py (--seed team_seed) draws them in the peers' order.

    The peers shuffle with `DataLoader(shuffle=True, generator=Generator().manual_seed(sampler_seed))`: they visit
    rows P[0], P[1], ... (the DataLoader draws a base seed from the generator before the RandomSampler's
    randperm, so P is not simply randperm under that seed). Our EpochStream visits dataset positions
    Q = randperm(n, Generator().manual_seed(team_seed)) in epoch 0. Writing row P[i] at position Q[i] makes both
    see the same examples at every step of the first epoch. The set of rows is unchanged.
    """
    import torch

    from lit_gpt.batching import EpochStream

    n = len(rows)
    loader = torch.utils.data.DataLoader(range(n), batch_size=1, shuffle=True,
                                         generator=torch.Generator().manual_seed(sampler_seed))
    P = [int(b) for batch in loader for b in batch]
    Q = EpochStream(n, 1, seed=team_seed).epoch_order(0)
    out = [None] * n
    for i in range(n):
        out[Q[i]] = rows[P[i]]
    return out


def steps(args: argparse.Namespace) -> None:
    out = []
    with open(args.metrics, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("train_loss"):
                continue  # step 0: initial validation only
            out.append({"step": int(row["step"]), "time_s": float(row["step_seconds"]),
                        "loss": float(row["train_loss"]), "tokens_padded": int(row["tokens_padded"]),
                        "tokens_real": int(row["tokens_real"]), "tokens_trainable": int(row["tokens_trainable"])})
    if not out:
        raise SystemExit(f"{args.metrics}: no training step")
    args.out.write_text("".join(json.dumps(r) + "\n" for r in out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prep")
    s.add_argument("--checkpoint_dir", type=Path, required=True)
    s.add_argument("--data_file", type=Path, required=True)
    s.add_argument("--max_seq_length", type=int, default=512)
    s.add_argument("--mask_inputs", type=lambda v: v.lower() in ("1", "true", "yes"), default=False)
    s.add_argument("--peer_order_seed", type=int, default=None,
                   help="reorder the rows so our run draws them in the order of the peers' sampler with this seed")
    s.add_argument("--team_seed", type=int, default=1337, help="the --seed finetune/lora.py will run with")
    s.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("steps")
    s.add_argument("--metrics", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    prep(a) if a.cmd == "prep" else steps(a)


if __name__ == "__main__":
    main()
