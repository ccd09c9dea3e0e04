"""OpenAssistant conversation trees -> one conversation per tree, along the best-ranked path.

OpenAssistant (OASST1, https://arxiv.org/abs/2304.07327) stores each conversation as a tree: a user prompt, several
ranked assistant replies, user follow-ups to each, and so on. Volunteers ranked sibling replies (`rank` 0 = best).
Following the best reply at every level gives the conversation the labellers liked most; we keep that one path
per tree, so no message is trained on twice. Both published nested layouts are read, one tree per line:

- the tree export (`*.trees.jsonl`, as in `2023-04-12_oasst_ready.trees.jsonl.gz`):
  `{"message_tree_id", "tree_state", "prompt": {message}}`
- nested messages: the root message itself, `{"message_id", "role", "text", "lang", "replies": [...], ...}`

Messages marked `deleted` or failing review (`review_result: false`) are never followed. Trees are kept when their
prompt's language is `lang` (None keeps all) and, in the tree export, when `tree_state` is `ready_for_export`.
Every tree left out is counted by reason in the report card.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterator

from lit_gpt.data.formats import Example, Record, Skip, Source, read_records
from lit_gpt.prompts import Turn
from lit_gpt.utils import UserError


def oasst_source(lang: str | None = "en") -> Source:
    """OASST1's "ready" trees (all trees that passed review), 10k trees in 35 languages, downloaded from the Hub."""
    trees = "2023-04-12_oasst_ready.trees.jsonl.gz"
    return Source("oasst", partial(read_oasst, lang=lang), "OpenAssistant/oasst1", trees, "drop")


def read_oasst(path: Path, lang: str | None = "en") -> Iterator[Example | Skip]:
    """One Example per tree in `path` (the best-ranked path), or a Skip saying why the tree was left out."""
    for record in read_records(path):
        root = record.fields.get("prompt", record.fields)
        if not isinstance(root, dict):
            raise UserError(f"{record.where()}: field 'prompt' must be a message object, found {type(root).__name__}")
        state = record.fields.get("tree_state", "ready_for_export")
        if state != "ready_for_export":
            yield Skip(record.row, f"tree_state {state}")
        elif root.get("deleted") or root.get("review_result") is False:
            yield Skip(record.row, "prompt deleted or failed review")
        elif lang is not None and root.get("lang") != lang:
            yield Skip(record.row, f"language {root.get('lang')}")
        else:
            yield _conversation(record, root)


def _conversation(record: Record, root: dict[str, Any]) -> Example | Skip:
    path = _best_path(record, root)
    if path[-1].get("role") == "prompter":  # a question nobody answered (well enough) yet
        path = path[:-1]
    if len(path) < 2:
        return Skip(record.row, "no assistant reply")
    texts = []
    for depth, message in enumerate(path):
        expected = "prompter" if depth % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise UserError(
                f"{record.where()}: message {message.get('message_id')} at depth {depth} has role "
                f"{message.get('role')!r}, expected {expected!r} (OpenAssistant trees alternate prompter/assistant)"
            )
        texts.append(record.string(message.get("text"), f"text of message {message.get('message_id')}"))
    turns = tuple(Turn(texts[i], texts[i + 1]) for i in range(0, len(texts), 2))
    empty = next((f"empty text in message {m.get('message_id')}" for m in path if not m["text"].strip()), None)
    lang = root.get("lang")
    if lang is not None:
        lang = record.string(lang, f"lang of message {root.get('message_id')}")
    return Example(turns, record.row, record.line, category=lang, problem=empty)


def _best_path(record: Record, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Root first; at each level the usable reply with the lowest rank (unranked after ranked, then file order)."""
    path = [message]
    while True:
        replies = message.get("replies") or []
        if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
            raise UserError(
                f"{record.where()}: 'replies' of message {message.get('message_id')} must be a list of messages"
            )
        usable = [r for r in replies if not r.get("deleted") and r.get("review_result") is not False]
        for reply in usable:
            if reply.get("rank") is not None and (type(reply["rank"]) is not int):
                raise UserError(f"{record.where()}: 'rank' of message {reply.get('message_id')} must be a whole number "
                                f"or null, found {reply['rank']!r}")
        if not usable:
            return path
        message = min(usable, key=lambda r: (r.get("rank") is None, r.get("rank") or 0))
        path.append(message)
