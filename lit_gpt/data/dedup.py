"""Removing duplicates and evaluation overlap from prepared datasets, into a new prepared dataset with a manifest.

    python scripts/dedup_dataset.py --data_dirs data/lima data/dolly --eval_files eval/prompts.jsonl \
        --destination_path data/lima-dolly-dedup

What is compared: an example's *content*, its text without the prompt template. The token ids are decoded with
the tokenizer the data was made for (`--checkpoint_dir`, by default the one in meta.json; special tokens dropped)
and the template's fixed text (Alpaca's header and `### Instruction:` lines, a chat template's role lines and
default system prompt) is cut out: left in, it would be shared by every example, inflate every similarity, and
make every training example "overlap" every test example. The content is then normalised into words: lowercased,
punctuation and symbols deleted, split on whitespace. (Token ids alone cannot be normalised, and provenance's
`text_sha256` hashes the raw text, so equal hashes imply equal normalised text but not the other way round.)

Each training example, in the order given (dataset by dataset, example by example), is removed for the first of:

    test_overlap     the same normalised text as a test example, a near-duplicate of one, or a shared n-gram of
                     `overlap_ngram` words (13: GPT-3's rule for filtering eval overlap from its training data) with one
    eval_overlap     a shared `overlap_ngram`-word n-gram with a text of an `--eval_files` file, or all of a shorter
                     one
    exact_duplicate  the same normalised text as an earlier kept training example
    near_duplicate   word-shingle Jaccard similarity >= `threshold` with an earlier kept training example; the
                     candidates come from MinHash + LSH (datasketch), and each candidate's similarity is then
                     computed exactly, so nothing below the threshold is removed (LSH may miss a rare pair near it)

So the first occurrence is kept, and within and across datasets alike. The test splits are the reference and are
copied whole (all of them, dataset by dataset); nothing else is changed either: the kept examples keep their ids,
labels and order. An example repeated on purpose (by a mix with replacement: the same source row in one input
dataset) is one example here: its copies are kept or removed together.

A test or eval text shorter than `overlap_ngram` words has no such n-gram: one of at least `min_overlap_words` (8,
the shortest n-gram GPT-3 used for a benchmark) overlaps a training example that contains all of it, word for word;
shorter ones are not checked and are counted in the manifest (a test example still goes on the same text).
"""
from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.derive import MANIFEST_NAME, Pick, check_same_tokenizer, dataset_sha256, write_derived
from lit_gpt.data.formats import read_records
from lit_gpt.data.tokenize import SegmentEncoder
from lit_gpt.prompts import PromptStyle, Turn, load_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, read_json, resolve_checkpoint_dir

REASONS = {
    "test_overlap": "same text as, near-duplicate of, or a shared n-gram with a test example",
    "eval_overlap": "a shared n-gram with an --eval_files text, or all of a short one",
    "exact_duplicate": "same normalised text as an earlier example",
    "near_duplicate": "near-duplicate of an earlier example",
}
TEXT_SHOWN = 300  # characters of each text in the manifest's examples


def words(text: str) -> list[str]:
    """Normalised words: lowercased, punctuation and symbols (and `_`) deleted, split on whitespace."""
    return re.sub(r"[^\w\s]|_", "", text.lower()).split()


def ngrams(tokens: Sequence[str], n: int) -> Iterator[str]:
    return (" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def shingles(tokens: Sequence[str], n: int) -> set[str]:
    """The word n-grams of a text; a text shorter than n words is one shingle (an empty one, none)."""
    return set(ngrams(tokens, n)) if len(tokens) >= n else ({" ".join(tokens)} if tokens else set())


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


class ContentReader:
    """The content text of an example: its ids decoded without special tokens, the prompt template cut out.

    The template's fixed pieces are found by building a sample exactly as preparation does, from placeholder
    turns, and cutting its decoded text at the placeholders.
    """

    def __init__(self, tokenizer: Tokenizer, style: PromptStyle) -> None:
        self.tokenizer = tokenizer
        encoder = SegmentEncoder(tokenizer)
        slots = iter(f"zzslot{i}zz" for i in range(10))
        pieces: set[str] = set()
        for turns in ([Turn(next(slots), next(slots), next(slots)), Turn(next(slots), next(slots))],
                      [Turn(next(slots), next(slots)), Turn(next(slots), next(slots))]):  # with and without input
            segments = style.segments(turns, last_turn_only=True)  # the template's pieces; any template renders it
            sample = encoder.build(segments, encoder.encode([segments])[0], style.bos)
            pieces.update(re.split(r"zzslot\d+zz", tokenizer.decode(sample.input_ids, skip_special_tokens=True)))
        # longest first, so a piece is cut whole before a shorter one inside it; whitespace-only pieces are left:
        # they are the content's own spacing as much as the template's
        self.pieces = sorted((p for p in pieces if p.strip()), key=lambda p: (-len(p), p))

    def __call__(self, ids: Sequence[int]) -> tuple[str, bool]:
        """The content text (whitespace collapsed), and whether any template piece was found in it."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        found = False
        for piece in self.pieces:
            if piece in text:
                text, found = text.replace(piece, " "), True
        return " ".join(text.split()), found


@dataclass
class Doc:
    """One text that is compared: a train or test example, or an eval text."""

    where: str  # e.g. "data/lima/train #12" or "eval.jsonl #3"
    text: str  # as shown in the report: the content, whitespace collapsed
    tokens: list[str]  # normalised words
    shingles: set[str] = field(default_factory=set)
    sketch: Any = None  # its MinHash, made once by the first Index that needs it

    def shown(self) -> dict[str, str]:
        cut = self.text[:TEXT_SHOWN] + ("..." if len(self.text) > TEXT_SHOWN else "")
        return {"where": self.where, "text": cut}


@dataclass
class Removal:
    reason: str
    removed: Doc
    matched: Doc
    similarity: float | None = None  # Jaccard of the shingles (1.0 for the same normalised text)
    ngram: str | None = None  # the shared n-gram of an overlap

    def record(self, with_text: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "removed": self.removed.where, "matched": self.matched.where,
                               "similarity": self.similarity, "ngram": self.ngram}
        if with_text:
            out.update(removed=self.removed.shown(), matched=self.matched.shown())
        return out


class Index:
    """Documents later ones are compared with: by normalised text, by `overlap_ngram`-word n-grams (unless None)
    and by MinHash LSH over word shingles."""

    def __init__(self, threshold: float, num_perm: int, overlap_ngram: int | None,
                 min_overlap_words: int | None = None) -> None:
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            raise UserError("near-duplicate detection needs datasketch: pip install datasketch") from None
        self.minhash = lambda: MinHash(num_perm=num_perm, seed=1)  # a fixed seed: the same data, the same result
        try:
            self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        except ValueError as e:  # e.g. "The number of bands are too small (b < 2)" for a threshold near 1
            raise UserError(f"--threshold {threshold} with --num_perm {num_perm}: no LSH banding fits ({e}); lower "
                            "the threshold (exact duplicates are removed anyway)") from None
        self.threshold, self.overlap_ngram, self.min_overlap_words = threshold, overlap_ngram, min_overlap_words
        self.docs: list[Doc] = []  # LSH keys are positions in this list
        self.exact: dict[str, Doc] = {}
        self.ngrams: dict[str, Doc] = {}
        self.short: dict[int, dict[str, Doc]] = {}  # texts shorter than overlap_ngram, whole, by their length

    def add(self, doc: Doc) -> None:
        self.exact.setdefault(" ".join(doc.tokens), doc)  # setdefault: a match names the first of equal texts
        if self.overlap_ngram is not None:
            for gram in ngrams(doc.tokens, self.overlap_ngram):
                self.ngrams.setdefault(gram, doc)
            if self.min_overlap_words is not None and self.min_overlap_words <= len(doc.tokens) < self.overlap_ngram:
                self.short.setdefault(len(doc.tokens), {}).setdefault(" ".join(doc.tokens), doc)
        if doc.shingles:
            self.lsh.insert(len(self.docs), self._sketch(doc))
            self.docs.append(doc)

    def same_text(self, doc: Doc) -> Doc | None:
        return self.exact.get(" ".join(doc.tokens))

    def shared_ngram(self, doc: Doc) -> tuple[Doc, str] | None:
        """The first n-gram of `doc` that an indexed document has too, and that document; or else the first short
        indexed document that `doc` contains whole."""
        if self.overlap_ngram is not None and self.ngrams:
            for gram in ngrams(doc.tokens, self.overlap_ngram):
                if gram in self.ngrams:
                    return self.ngrams[gram], gram
        for n, texts in self.short.items():
            for gram in ngrams(doc.tokens, n):
                if gram in texts:
                    return texts[gram], gram
        return None

    def nearest(self, doc: Doc) -> tuple[Doc, float] | None:
        """The most similar indexed document at or above the threshold (ties: the earliest), and its similarity."""
        if not doc.shingles or not self.docs:
            return None
        best: tuple[float, int] | None = None
        for key in sorted(self.lsh.query(self._sketch(doc))):
            similarity = jaccard(doc.shingles, self.docs[key].shingles)  # exact: LSH only proposes candidates
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, key)
        return None if best is None else (self.docs[best[1]], best[0])

    def _sketch(self, doc: Doc) -> Any:
        if doc.sketch is None:
            doc.sketch = self.minhash()
            doc.sketch.update_batch([s.encode() for s in sorted(doc.shingles)])
        return doc.sketch


def read_eval_texts(path: Path) -> list[str]:
    """The texts of an eval file: a `.txt` (or other) file holds one text per non-empty line; a JSON list of
    strings one per item; a JSON list, JSON Lines or CSV file of records one per record (all its strings, joined:
    the question, its choices and its answer all count)."""
    if not path.is_file():
        raise UserError(f"--eval_files {path} does not exist; pass JSON, JSON Lines, CSV or text files")
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith((".json", ".jsonl", ".csv")):
        try:
            return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (byte offset {e.start}); re-save the file as UTF-8") from None
    if path.name.lower().endswith(".json"):
        data = read_json(path)
        if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
            return data
    return ["\n".join(_strings(record.fields)) for record in read_records(path)]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def dedup_dataset(
    data_dirs: list[Path],
    destination_path: Path,
    checkpoint_dir: Path | None = None,
    eval_files: list[Path] | None = None,
    threshold: float = 0.8,
    shingle_size: int = 3,
    num_perm: int = 128,
    overlap_ngram: int = 13,
    report_examples: int = 5,
    min_overlap_words: int = 8,
) -> dict[str, Any]:
    """Remove duplicate training examples, and those overlapping evaluation data, into a new prepared dataset.

    Writes DESTINATION_PATH: the training examples of DATA_DIRS that are neither duplicates nor overlap the
    evaluation data (see the module docstring), in order, and every test example, with `manifest.json`. Returns the
    manifest.

    Args:
        data_dirs: Prepared datasets (same tokenizer and prompt style); of equal texts, the first in this order stays.
        destination_path: The new dataset's folder (replaced as a whole on success).
        checkpoint_dir: The model whose tokenizer decodes the examples. Default: the one in meta.json.
        eval_files: Evaluation texts no training example may share an --overlap_ngram with: JSON/JSONL/CSV records
            (all their strings) or a JSON list of strings, or a text file with one text per line.
        threshold: Near-duplicates: word-shingle Jaccard similarity at which the later example goes.
        shingle_size: Words per shingle for the near-duplicate similarity.
        num_perm: MinHash permutations (more: fewer pairs near the threshold missed, slower).
        overlap_ngram: Words in the n-grams that count as overlap with the test split or --eval_files.
        report_examples: Removals of each reason shown in full (removed and matched text) in manifest.json.
        min_overlap_words: A test or eval text shorter than --overlap_ngram words but at least this long overlaps a
            training example that contains all of it, word for word; shorter ones are not checked (counted).
    """
    data_dirs, destination_path = [Path(d) for d in data_dirs], Path(destination_path)
    eval_files = [Path(p) for p in eval_files or ()]
    _check_options(data_dirs, destination_path, threshold, shingle_size, num_perm, overlap_ngram, min_overlap_words)
    splits = {split: [TokenizedDataset(d, split, None) for d in data_dirs] for split in ("train", "test")}
    check_same_tokenizer(splits["train"])
    tokenizer = _tokenizer(splits["train"][0], checkpoint_dir)
    readers = [ContentReader(tokenizer, load_prompt_style(d.meta["prompt_style"], tokenizer)) for d in splits["train"]]
    no_template = {"train": 0, "test": 0}  # examples in which no piece of the prompt template was found

    def docs(split: str) -> Iterator[tuple[int, int, Doc]]:
        """(dataset number, example index, Doc) of every example of `split`, in order."""
        total = sum(len(d) for d in splits[split])
        with tqdm(total=total, desc=f"Comparing {split} examples", unit=" examples", file=sys.stderr) as progress:
            for k, (d, read) in enumerate(zip(splits[split], readers)):
                for i in range(len(d)):
                    text, found = read(d.input_ids[d.offsets[i]:d.offsets[i + 1]])
                    no_template[split] += not found
                    tokens = words(text)
                    yield k, i, Doc(f"{d.data_dir}/{split} #{i}", text, tokens, shingles(tokens, shingle_size))
                    progress.update()

    eval_index = Index(threshold, num_perm, overlap_ngram, min_overlap_words)  # n-grams only: eval docs get no shingles
    eval_summary = []
    for path in map(Path, eval_files):
        texts = [Doc(f"{path} #{j}", " ".join(text.split()), words(text))
                 for j, text in enumerate(read_eval_texts(path))]
        for doc in texts:
            eval_index.add(doc)
        lengths = [len(doc.tokens) for doc in texts]
        eval_summary.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                             "texts": len(texts),
                             "checked_whole": sum(min_overlap_words <= n < overlap_ngram for n in lengths),
                             "not_checked": sum(n < min_overlap_words for n in lengths)})
    test_index = Index(threshold, num_perm, overlap_ngram, min_overlap_words)
    for _, _, doc in docs("test"):
        test_index.add(doc)
    train_index = Index(threshold, num_perm, None)  # the kept training examples, as they are decided

    def check(doc: Doc) -> Removal | None:
        """Why `doc` goes (the first reason that applies), or None: it stays, and later examples meet it."""
        if matched := test_index.same_text(doc):
            return Removal("test_overlap", doc, matched, similarity=1.0)
        if shared := test_index.shared_ngram(doc):
            return Removal("test_overlap", doc, shared[0], ngram=shared[1])
        if near := test_index.nearest(doc):
            return Removal("test_overlap", doc, near[0], similarity=near[1])
        if shared := eval_index.shared_ngram(doc):
            return Removal("eval_overlap", doc, shared[0], ngram=shared[1])
        if matched := train_index.same_text(doc):
            return Removal("exact_duplicate", doc, matched, similarity=1.0)
        if near := train_index.nearest(doc):
            return Removal("near_duplicate", doc, near[0], similarity=near[1])
        train_index.add(doc)
        return None

    provenance = [d.provenance() for d in splits["train"]]
    kept: list[Pick] = []
    removals: list[Removal] = []
    decided: dict[tuple[Any, ...], Removal | None] = {}  # by source row: the copies a mix made share one decision
    removed_by_source: list[Counter] = [Counter() for _ in data_dirs]
    for k, i, doc in docs("train"):
        p = provenance[k][i]
        identity = (k, p.get("from"), p.get("source"), p.get("row"))
        if identity not in decided:
            decided[identity] = check(doc)
        if (first := decided[identity]) is None:
            kept.append((splits["train"][k], i))
        else:
            removals.append(Removal(first.reason, doc, first.matched, first.similarity, first.ngram))
            removed_by_source[k][first.reason] += 1

    manifest = _manifest(data_dirs, splits, tokenizer, eval_files, eval_summary, removals, removed_by_source,
                         no_template, threshold, shingle_size, num_perm, overlap_ngram, report_examples,
                         min_overlap_words)
    test_picks = [(d, i) for d in splits["test"] for i in range(len(d))]
    write_derived(destination_path, {"train": kept, "test": test_picks}, manifest)
    print(format_report(manifest, destination_path))
    return manifest


def _manifest(data_dirs: list[Path], splits: dict[str, list[TokenizedDataset]], tokenizer: Tokenizer,
              eval_files: Sequence[Path], eval_summary: list[dict[str, Any]], removals: list[Removal],
              removed_by_source: list[Counter], no_template: dict[str, int], threshold: float, shingle_size: int,
              num_perm: int, overlap_ngram: int, report_examples: int, min_overlap_words: int) -> dict[str, Any]:
    totals = Counter(r.reason for r in removals)
    examples: dict[str, list[dict[str, Any]]] = {reason: [] for reason in REASONS}
    for r in removals:
        if len(examples[r.reason]) < report_examples:
            examples[r.reason].append(r.record(with_text=True))
    n_train = sum(len(d) for d in splits["train"])
    return {
        "tool": "dedup_dataset",
        "parameters": {"checkpoint_dir": str(tokenizer.checkpoint_dir), "eval_files": [str(p) for p in eval_files],
                       "threshold": threshold, "shingle_size": shingle_size, "num_perm": num_perm,
                       "overlap_ngram": overlap_ngram, "min_overlap_words": min_overlap_words,
                       "report_examples": report_examples},
        "reasons": REASONS,
        "sources": [
            {"data_dir": str(path), "sha256": dataset_sha256(path),
             "train": {"examples": len(train), "kept": len(train) - sum(removed.values()),
                       "removed": {reason: removed[reason] for reason in REASONS}},
             "test": {"examples": len(test), "kept": len(test)}}
            for path, train, test, removed in zip(data_dirs, splits["train"], splits["test"], removed_by_source)
        ],
        "eval_files": eval_summary,
        "train": {"examples": n_train, "kept": n_train - len(removals),
                  "removed": {reason: totals[reason] for reason in REASONS}},
        "test": {"examples": sum(len(d) for d in splits["test"]), "kept": sum(len(d) for d in splits["test"]),
                 "rule": "copied whole: the reference the training examples are checked against"},
        "template_not_found": no_template,
        "examples": examples,
        "removed": [r.record(with_text=False) for r in removals],
    }


def format_report(manifest: dict[str, Any], destination_path: Path) -> str:
    """The printed summary: counts by reason, then the first examples of each, removed beside matched."""
    train, p = manifest["train"], manifest["parameters"]
    details = {
        "test_overlap": f"exact, Jaccard >= {p['threshold']}, or a shared {p['overlap_ngram']}-gram (a shorter text "
                        "contained whole)",
        "eval_overlap": f"a shared {p['overlap_ngram']}-gram (a shorter text contained whole)",
        "exact_duplicate": "same normalised text",
        "near_duplicate": f"word {p['shingle_size']}-shingle Jaccard >= {p['threshold']}",
    }
    lines = [f"Dedup report for {destination_path}:",
             f"  train  {train['examples']:,} examples, kept {train['kept']:,}, removed "
             f"{train['examples'] - train['kept']:,}"]
    lines += [f"    {reason:<16} {n:>6,}  ({details[reason]})" for reason, n in train["removed"].items()]
    lines.append(f"  test   {manifest['test']['examples']:,} examples, copied whole")
    for e in manifest["eval_files"]:
        lines.append(f"  eval   {e['path']}: {e['texts']:,} texts ({e['checked_whole']:,} of "
                     f"{p['min_overlap_words']}-{p['overlap_ngram'] - 1} words matched whole, {e['not_checked']:,} "
                     f"shorter, not checked)")
    if any(manifest["template_not_found"].values()):
        lines.append(f"  note: no piece of the prompt template was found in {manifest['template_not_found']} "
                     "examples; their template words count as content")
    for reason, shown in manifest["examples"].items():
        for e in shown[:2]:
            how = f"ngram {e['ngram']!r}" if e["ngram"] else f"similarity {e['similarity']:.2f}"
            lines.append(f"  {reason} ({how}):")
            lines.append(f"    removed {e['removed']['where']}: {e['removed']['text'][:100]!r}")
            lines.append(f"    matched {e['matched']['where']}: {e['matched']['text'][:100]!r}")
    lines.append(f"Wrote {destination_path} ({MANIFEST_NAME} lists every removal, with up to "
                 f"{p['report_examples']} examples of each reason in full)")
    return "\n".join(lines)


def _tokenizer(dataset: TokenizedDataset, checkpoint_dir: Path | None) -> Tokenizer:
    """The tokenizer the data was made for: --checkpoint_dir, or the folder meta.json names."""
    recorded = dataset.meta["tokenizer"]["checkpoint_dir"]
    folder = resolve_checkpoint_dir(checkpoint_dir if checkpoint_dir is not None else recorded)
    if not folder.is_dir():
        raise UserError(f"{dataset.data_dir} was prepared with the tokenizer of {recorded}, which is not there; pass "
                        "--checkpoint_dir with that model's folder (its tokenizer decodes the examples)")
    tokenizer = Tokenizer(folder)
    TokenizedDataset(dataset.data_dir, "train", tokenizer)  # refuses another tokenizer, naming both
    return tokenizer


def _check_options(data_dirs: list[Path], destination_path: Path, threshold: float, shingle_size: int,
                   num_perm: int, overlap_ngram: int, min_overlap_words: int) -> None:
    if not data_dirs:
        raise UserError("pass the prepared datasets with --data_dirs, e.g. --data_dirs data/lima data/dolly")
    if any(destination_path.resolve() == d.resolve() for d in data_dirs):
        raise UserError(f"--destination_path {destination_path} is one of --data_dirs; write to a new folder")
    if not 0 < threshold < 1:  # 1 would be exact duplicates, which are found without LSH (that cannot do 1)
        raise UserError(f"--threshold {threshold}: pass a Jaccard similarity between 0 and 1 (exclusive)")
    for name, value in (("shingle_size", shingle_size), ("num_perm", num_perm), ("overlap_ngram", overlap_ngram)):
        if value < 1:
            raise UserError(f"--{name} {value}: pass a positive number")
    if not 1 <= min_overlap_words <= overlap_ngram:
        raise UserError(f"--min_overlap_words {min_overlap_words}: pass a number from 1 to --overlap_ngram "
                        f"({overlap_ngram})")
