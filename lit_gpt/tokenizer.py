"""One tokenizer over SentencePiece (`tokenizer.model`) and Hugging Face (`tokenizer.json`) checkpoints.

It encodes like `transformers.AutoTokenizer` (transformers 5.x) on the same folder, with two deliberate choices:

- A folder with only `tokenizer.model` is encoded by `sentencepiece` itself, as in Meta's and Mistral's reference
  code. transformers' `LlamaTokenizer` class rebuilds a BPE from the model file that splits leading and repeated
  spaces differently; its `TokenizersBackend` (picked by `"tokenizer_class": "TokenizersBackend"` or when there is
  no tokenizer_config.json) follows sentencepiece exactly, and that is the path our tests compare against.
- Such a folder adds BOS unless tokenizer_config.json says `"add_bos_token": false` (transformers 5 defaults to
  False there, v4's `LlamaTokenizer` and Meta's code add it).

Special tokens come from the files the way transformers reads them:
  tokenizer_config.json `bos_token`/`eos_token`/`pad_token`/`unk_token` (a string or a serialized AddedToken),
  overridden by special_tokens_map.json when the config has no `added_tokens_decoder` (transformers' legacy rule);
  for `tokenizer.model` the model's own BOS/EOS/pad pieces otherwise; and generation_config.json, then config.json
  `*_token_id` as a last resort. With `tokenizer.json` its post-processor alone decides whether BOS/EOS are added
  (transformers 5 drops `add_bos_token`/`add_eos_token` from the config when a tokenizer.json exists).
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import jinja2
import jinja2.ext
import jinja2.sandbox
import sentencepiece
import tokenizers

from lit_gpt.utils import UserError, read_json, require_dir

if TYPE_CHECKING:
    import torch

_DOWNLOAD_HINT = "Download the checkpoint with `python scripts/download.py --repo_id ORG/NAME`."
_SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class Tokenizer:
    """Text <-> token ids for the checkpoint in `checkpoint_dir` (other files in the folder, such as
    `lit_config.json` and `lit_model.safetensors`, are ignored).

    `tokenizer.json` wins over `tokenizer.model` when both exist, as in transformers and Lit-GPT: it also carries
    the tokens a chat finetune added (e.g. `<|im_start|>`), which the sentencepiece model lacks.
    """

    checkpoint_dir: Path
    backend: str  # "sentencepiece" or "huggingface"
    vocab_size: int  # including added tokens
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool  # whether encode() prepends BOS by default (as transformers would)
    add_eos: bool  # whether encode() appends EOS by default
    stop_ids: frozenset[int]  # tokens that end a generated answer: EOS and generation_config.json's eos_token_id(s)
    chat_template: str | None

    def __init__(self, checkpoint_dir: Path | str) -> None:
        self.checkpoint_dir = require_dir(Path(checkpoint_dir), "Checkpoint folder", _DOWNLOAD_HINT)
        tokenizer_config = _read_dict(self.checkpoint_dir / "tokenizer_config.json")
        special = {key: tokenizer_config.get(key) for key in _SPECIAL_KEYS}
        if "added_tokens_decoder" not in tokenizer_config:
            special_map = _read_dict(self.checkpoint_dir / "special_tokens_map.json")
            special.update({key: special_map[key] for key in _SPECIAL_KEYS if special_map.get(key) is not None})
        # Named special tokens as plain strings (what chat templates see as `bos_token` etc.).
        self._special_tokens: dict[str, str] = {
            key: content for key, value in special.items() if (content := _token_content(value)) is not None
        }

        if (path := self.checkpoint_dir / "tokenizer.json").is_file():
            self._init_huggingface(path)
        elif (path := self.checkpoint_dir / "tokenizer.model").is_file():
            self._init_sentencepiece(path, tokenizer_config)
        else:
            raise UserError(
                f"{self.checkpoint_dir}: no tokenizer found (looked for tokenizer.json and tokenizer.model). "
                + _DOWNLOAD_HINT
            )
        self._file_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

        # Last resort for ids the tokenizer files leave open: what generation uses (generation_config.json, whose
        # `eos_token_id` may be a list, then the model's config.json).
        for name in ("bos", "eos", "pad"):
            if getattr(self, f"{name}_id") is None:
                setattr(self, f"{name}_id", self._config_token_id(f"{name}_token_id"))
        self.add_bos = self.add_bos and self.bos_id is not None
        self.add_eos = self.add_eos and self.eos_id is not None
        self.stop_ids = self._stop_ids()

        # A separate chat_template.jinja wins over the config entry, as in transformers.
        template_path = self.checkpoint_dir / "chat_template.jinja"
        template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
        if template is None:
            template = tokenizer_config.get("chat_template")
            if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
                template = next((t["template"] for t in template if t.get("name") == "default"), None)
        self.chat_template = template

    # -- backends -----------------------------------------------------------------------------------------------

    def _init_huggingface(self, path: Path) -> None:
        self.backend = "huggingface"
        try:
            self._hf = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception
            raise UserError(f"{path}: not a valid tokenizer.json ({e})") from None
        # Padding/truncation saved in the file would silently pad or cut our batches.
        self._hf.no_truncation()
        self._hf.no_padding()
        # transformers registers every named special token as a special added token, so its string in the text
        # becomes the one id (and decode can skip it).
        added = {t.content for t in self._hf.get_added_tokens_decoder().values()}
        for key, content in self._special_tokens.items():
            if content not in added:
                self._token_id(content, f"{key} {content!r}")
                self._hf.add_special_tokens([tokenizers.AddedToken(content, special=True, normalized=False)])
        self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        self.bos_id = self._named_id("bos_token")
        self.eos_id = self._named_id("eos_token")
        self.pad_id = self._named_id("pad_token")

        prefix, suffix = _post_processor_specials(self._hf)
        for name, ids in (("bos", prefix), ("eos", suffix)):
            current = getattr(self, f"{name}_id")
            if len(ids) > 1 or (ids and current is not None and ids[0] != current):
                raise UserError(
                    f"{path}: the post-processor adds {ids} around each text, but the {name} token id is {current}; "
                    "only a single BOS before and a single EOS after are supported"
                )
            if ids:
                setattr(self, f"{name}_id", ids[0])
        self.add_bos = bool(prefix)
        self.add_eos = bool(suffix)
        self._specials = {t.content: i for i, t in self._hf.get_added_tokens_decoder().items() if t.special}

    def _init_sentencepiece(self, path: Path, tokenizer_config: dict[str, Any]) -> None:
        self.backend = "sentencepiece"
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:
            raise UserError(f"{path}: not a valid sentencepiece model ({e})") from None
        sp = self._sp
        self.vocab_size = sp.get_piece_size()
        self.bos_id = self._named_id("bos_token", default=sp.bos_id())
        self.eos_id = self._named_id("eos_token", default=sp.eos_id())
        self.pad_id = self._named_id("pad_token", default=sp.pad_id())
        self.add_bos = bool(tokenizer_config.get("add_bos_token", True))
        self.add_eos = bool(tokenizer_config.get("add_eos_token", False))
        # sentencepiece never produces control pieces (<s>, </s>, Mistral's [INST]...) from text, it spells them
        # out. transformers matches their strings in the text and emits their ids, and a rendered chat template
        # relies on that, so we split the text on them too; each piece in between is encoded on its own (with its
        # own leading "▁"), exactly as transformers' sentencepiece-faithful path and Meta's chat code do. (A config's
        # `"legacy": false`, no "▁" after a special token, is therefore not followed.)
        self._specials = {
            sp.id_to_piece(i): i for i in range(self.vocab_size) if sp.is_control(i) or sp.is_unknown(i)
        }
        self._specials.update(
            {content: self._token_id(content, f"{key} {content!r}") for key, content in self._special_tokens.items()}
        )
        # Longest first, so that a token that is a prefix of another never wins.
        alternatives = "|".join(map(re.escape, sorted(self._specials, key=len, reverse=True)))
        self._special_re = re.compile(f"({alternatives})" if alternatives else "(?!)")  # (?!) never matches
        self._special_pieces = {i: token for token, i in self._specials.items()}

    def _named_id(self, key: str, default: int | None = None) -> int | None:
        content = self._special_tokens.get(key)
        if content is None:
            return default if default is not None and default >= 0 else None
        return self._token_id(content, f"{key} {content!r}")

    def _token_id(self, token: str, what: str) -> int:
        if self.backend == "huggingface":
            i = self._hf.token_to_id(token)
        else:
            i = self._sp.piece_to_id(token)
            i = i if self._sp.id_to_piece(i) == token else None  # unknown pieces map to <unk>
        if i is None:
            raise UserError(f"{self.checkpoint_dir}: {what} is not in the tokenizer's vocabulary")
        return i

    def _config_token_id(self, key: str) -> int | None:
        for name in ("generation_config.json", "config.json"):
            value = _read_dict(self.checkpoint_dir / name).get(key)
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, int):
                return value
        return None

    def _stop_ids(self) -> frozenset[int]:
        # Chat models end a turn with a token of their own and list it next to EOS (Llama 3.1: <|eot_id|>, <|eom_id|>;
        # Gemma: <end_of_turn>; Phi-3: <|end|>), as transformers' `generate` reads them. Training data keeps the one EOS.
        path = self.checkpoint_dir / "generation_config.json"
        value = _read_dict(path).get("eos_token_id")
        listed = value if isinstance(value, list) else [] if value is None else [value]
        for i in listed:
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise UserError(f"{path}: eos_token_id {value!r} should be a token id or a list of token ids; fix or "
                                "remove the entry")
        return frozenset(listed) | ({self.eos_id} if self.eos_id is not None else set())

    # -- public API ---------------------------------------------------------------------------------------------

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over what decides the ids: the backend, the tokenizer file and the special-token settings.

        Paths and unrelated settings are left out, so copies of a folder agree.
        """
        defining = {
            "backend": self.backend,
            "file_sha256": self._file_sha256,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "specials": sorted(self._specials.items()),
        }
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()

    @property
    def has_chat_template(self) -> bool:
        return self.chat_template is not None

    def encode(self, text: str, bos: bool | None = None, eos: bool | None = None) -> list[int]:
        """Token ids of `text`. Special-token strings in the text (e.g. `<|im_start|>`, `</s>`) become their ids.

        `bos`/`eos`: prepend BOS / append EOS; None means the tokenizer's default (`add_bos`/`add_eos`).
        """
        return self.encode_batch([text], bos, eos)[0]

    def encode_batch(self, texts: Sequence[str], bos: bool | None = None, eos: bool | None = None) -> list[list[int]]:
        """`[encode(t, bos, eos) for t in texts]`, in one call into the Rust/C++ tokenizer (much faster)."""
        if self.backend == "huggingface":
            batch = [e.ids for e in self._hf.encode_batch_fast(list(texts), add_special_tokens=False)]
        else:
            batch = self._encode_sentencepiece(texts)
        prefix = self._special_id("bos", self.add_bos if bos is None else bos)
        suffix = self._special_id("eos", self.add_eos if eos is None else eos)
        if prefix or suffix:
            batch = [prefix + ids + suffix for ids in batch]
        return batch

    def _encode_sentencepiece(self, texts: Sequence[str]) -> list[list[int]]:
        # re.split with a capture group alternates [text, special, text, ...]; all text pieces go to sentencepiece
        # in one call.
        parts = [self._special_re.split(text) for text in texts]
        pieces = [piece for p in parts for piece in p[::2]]
        # A list makes sentencepiece start a thread pool: worth it for a batch, twice as slow for one string.
        encoded = iter(self._sp.encode(pieces) if len(pieces) > 1 else [self._sp.encode(s) for s in pieces])
        batch = []
        for p in parts:
            ids = next(encoded)
            for special in p[1::2]:
                ids.append(self._specials[special])
                ids.extend(next(encoded))
            batch.append(ids)
        return batch

    def _special_id(self, name: str, wanted: bool) -> list[int]:
        if not wanted:
            return []
        i = getattr(self, f"{name}_id")
        if i is None:
            raise UserError(f"{self.checkpoint_dir}: the tokenizer has no {name.upper()} token")
        return [i]

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of `ids`. With `skip_special_tokens`, BOS/EOS/pad and other special tokens are left out."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if isinstance(ids, int):  # a 0-d tensor
            ids = [ids]
        if self.backend == "huggingface":
            return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)
        special = self._special_pieces
        if skip_special_tokens:  # same text as transformers
            return self._sp.decode([i for i in ids if i not in special])
        # sentencepiece would drop control tokens; write them out and decode the runs between them separately, the
        # inverse of `encode`. (transformers writes "<s> Hello" here, where this gives "<s>Hello".)
        out, run = [], []
        for i in ids:
            if i in special:
                out += [self._sp.decode(run), special[i]]
                run = []
            else:
                run.append(i)
        return "".join(out) + self._sp.decode(run)

    def token_to_id(self, token: str) -> int:
        """Id of one token string as it appears in the vocabulary (e.g. `"<|im_end|>"`, `"▁Hello"`)."""
        return self._token_id(token, f"token {token!r}")

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """Render `messages` ([{"role": ..., "content": ...}, ...]) with the checkpoint's chat template.

        The text equals `AutoTokenizer.apply_chat_template(messages, tokenize=False, ...)`. It usually contains the
        BOS text already, so encode it with `bos=False` (transformers encodes it without special tokens too).
        """
        if self.chat_template is None:
            raise UserError(
                f"{self.checkpoint_dir}: no chat template (neither chat_template.jinja nor a `chat_template` entry "
                "in tokenizer_config.json)"
            )
        if not messages:
            raise UserError("cannot apply the chat template to an empty list of messages")
        # Like transformers: keys set to None are dropped, templates handle missing keys better than None.
        messages = [{key: value for key, value in m.items() if value is not None} for m in messages]
        try:
            return self._template.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self._special_tokens,
            )
        except jinja2.TemplateError as e:  # includes the template's own raise_exception(...)
            raise UserError(f"{self.checkpoint_dir}: chat template: {e}") from None

    @cached_property
    def _template(self) -> jinja2.Template:
        # The same environment as transformers: chat templates come from the Hub and are untrusted code.
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(self.chat_template)
        except jinja2.TemplateSyntaxError as e:
            raise UserError(f"{self.checkpoint_dir}: chat template line {e.lineno}: {e.message}") from None

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.checkpoint_dir)!r}, backend={self.backend!r}, vocab_size={self.vocab_size})"


def _read_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _token_content(value: Any) -> str | None:
    """`bos_token` etc. are saved as a string or as an AddedToken dict ({"content": "<s>", "lstrip": false, ...})."""
    return value.get("content") if isinstance(value, dict) else value


def _post_processor_specials(tok: tokenizers.Tokenizer) -> tuple[list[int], list[int]]:
    """Ids the post-processor puts before and after a single text (transformers' fast tokenizers add exactly these)."""
    if tok.post_processor is None:
        return [], []
    state = json.loads(tok.post_processor.__getstate__())
    processors = state["processors"] if state["type"] == "Sequence" else [state]
    prefix: list[int] = []
    suffix: list[int] = []
    for p in processors:
        if p["type"] == "TemplateProcessing":
            ids = {name: token["ids"] for name, token in p["special_tokens"].items()}
            after = False
            for item in p["single"]:
                if "Sequence" in item:
                    after = True
                else:
                    (suffix if after else prefix).extend(ids[item["SpecialToken"]["id"]])
        elif p["type"] in ("BertProcessing", "RobertaProcessing"):
            prefix.append(p["cls"][1])
            suffix.append(p["sep"][1])
    return prefix, suffix


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters; templates expect plain JSON (as in transformers).
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text in some templates; render the body as is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()
