"""Our model as an lm-evaluation-harness model (https://github.com/EleutherAI/lm-evaluation-harness).

`LitLM` answers the three request types of lm-eval with the requests tokenized, truncated and deduplicated
exactly as lm-eval's Hugging Face backend (`--model hf`, lm_eval/models/huggingface.py) does them, so both give
the same numbers on the same weights. What differs is how the forward passes are laid out:

    hf backend: one row per request, padded          LitLM: one packed row per batch, no padding
        [c1 c1 c1 x1 x1 . . .]   logits for every        [c1 c1 c1 x1 x1|c2 x2|c3 c3 c3 c3 x3 x3]
        [c2 x2 . . . . . . . ]   position: (B, T, V)      positions 0 1 2 3 4 0 1 0 1 2 3 4 5: each request
        [c3 c3 c3 c3 x3 x3 . ]                            attends to itself only (`packed_collate`); the head
                                                          runs only where a continuation token x is scored

Requests whose context + continuation[:-1] agree (multiple choice with one-token answers) share one input; like
lm-eval's `Collator(group_by="contexts")`, one forward serves them all. Generation uses the KV cache, one request
at a time (the cache holds one sequence), and stops at EOS or as soon as a stop sequence appears.

lm_eval is an optional dependency (`pip install -e ".[eval]"`): import this module only where it is needed.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from lit_gpt.collate import packed_collate
from lit_gpt.generate import generate_batch
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError

# positions whose vocabulary projection is computed at once: bounds the (chunk, vocab_size) float32 logits
HEAD_CHUNK = 1024


class LitLM(TemplateLM):
    """lm-eval's model interface over a `GPT` (with or without a LoRA adapter applied) and its `Tokenizer`.

    `batch_size` requests (after deduplication) go through the model in one packed row; `max_length` is the
    context lm-eval truncates requests to (default: the model's block_size, which is what the hf backend reads
    from config.json); `max_gen_toks` is the generation budget of tasks that set none (256, as the hf backend).
    `autocast_dtype` runs the forward under autocast (the "-mixed" precisions).
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, batch_size: int = 32, max_length: int | None = None,
                 max_gen_toks: int = 256, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"--batch_size must be at least 1, got {batch_size}")
        block_size = model.config.block_size
        if max_length is not None and not 1 <= max_length <= block_size:
            raise UserError(f"--max_length {max_length} must be between 1 and the model's context ({block_size})")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._max_length = max_length or block_size
        self._max_gen_toks = max_gen_toks
        self._device = model.embed.weight.device
        self.autocast_dtype = autocast_dtype
        # RoPE tables for the longest input a request can have (generation grows them itself when it needs to)
        self.model.max_seq_length = self._max_length
        self.tokens_forwarded = 0  # tokens through the model for loglikelihoods, padding-free: read by the tests

    # -- what lm-eval asks of a model ---------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        # the token an empty context (and each rolling window's first prediction) is conditioned on, as the hf backend
        return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids as the hf backend's `tok_encode`: the tokenizer's own special tokens (BOS for most models)
        unless told otherwise, and none when the text already starts with the BOS text."""
        if add_special_tokens is None:
            add_special_tokens = not string.startswith(self.tokenizer.decode([self.prefix_token_id]))
        if add_special_tokens:
            return self.tokenizer.encode(string)
        return self.tokenizer.encode(string, bos=False, eos=False)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether greedy decoding gives the continuation) per (key, context ids,
        continuation ids) request, in order.

        As the hf backend: the model reads (context + continuation)[:-1], cut from the left to `max_length`, and
        the continuation is scored at the last positions; requests with the same input share one forward.
        """
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise ValueError("lm-eval passed a request with an empty context or continuation")
            groups.setdefault(tuple(context + continuation[:-1]), []).append(i)
        # longest first, as lm-eval orders them: memory peaks at the first batch, and neighbours are alike
        keys = sorted(groups, key=lambda key: (-len(key), key))
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests") as progress:
            for start in range(0, len(keys), self.batch_size):
                batch = keys[start : start + self.batch_size]
                scored = [max(len(requests[i][2]) for i in groups[key]) for key in batch]
                for key, (shared_lp, shared_greedy, last_lp) in zip(batch, self._score(batch, scored)):
                    for i in groups[key]:
                        request_key, _, continuation = requests[i]
                        # the continuation's tokens but the last are input tokens, the same for the whole group
                        n = len(continuation) - 1
                        tail = slice(len(shared_lp) - n, len(shared_lp))
                        last = continuation[-1]
                        logprob = torch.cat((shared_lp[tail], last_lp[last].view(1))).sum()
                        greedy = bool(shared_greedy[tail].all()) and int(last_lp.argmax()) == last
                        answers[i] = (float(logprob), greedy)
                        if request_key is not None:  # rolling windows are cached per text, not per window
                            self.cache_hook.add_partial("loglikelihood", request_key, answers[i])
                    progress.update(len(groups[key]))
        return answers  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """log P(text) of whole texts (perplexity tasks): the windows of lm-eval's `get_rolling_token_windows`
        (the first conditioned on `prefix_token_id`), scored together as loglikelihood requests and summed."""
        windows, owners = [], []
        for i, request in enumerate(requests):
            (text,) = request.args
            rolling = lm_eval_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(lm_eval_utils.make_disjoint_window, rolling):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[i] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, when the task asks) continuations with the KV cache, cut at the first stop sequence.

        As the hf backend: EOS's text joins the stop sequences; the context gets the tokenizer's special tokens
        unless it starts with the BOS text, and is cut from the left to leave `max_gen_toks` of room; the text is
        decoded without special tokens. Requests with the same settings run `batch_size` at a time, longest prompt
        first (`generate_batch`: each row computes what it would alone); a row that met a stop sequence is cut there
        after the batch, as the text up to the stop is the same.
        """
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        bos_id = self.tokenizer.bos_id
        bos_text = None if bos_id is None else self.tok_decode([bos_id], skip_special_tokens=False)
        jobs: dict[tuple, list[tuple[int, list[int], list[str]]]] = {}  # settings -> (request index, prompt, until)
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            settings = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
            until = handle_stop_sequences(settings.pop("until", None), eos=eos_text)
            max_gen_toks = settings.pop("max_gen_toks")
            temperature, do_sample = float(settings.pop("temperature", 0.0)), settings.pop("do_sample", False)
            temperature = temperature if do_sample else 0.0  # greedy unless the task samples
            top_k = settings.pop("top_k", None)
            if settings:
                raise UserError(f"task {request.task_name}: generation settings {sorted(settings)} are not "
                                "supported (do_sample, temperature, top_k, until and max_gen_toks are); remove them "
                                "from its YAML")
            room = self.max_length - max_gen_toks
            if room <= 0:
                raise UserError(f"task {request.task_name}: max_gen_toks {max_gen_toks} leaves no room for a prompt "
                                f"in the context of {self.max_length} tokens")
            add_special_tokens = not (bos_text and context.startswith(bos_text))
            prompt = self.tok_encode(context, add_special_tokens=add_special_tokens)[-room:]
            jobs.setdefault((max_gen_toks, temperature, top_k), []).append((index, prompt, until))

        texts: list[str] = [""] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        for (max_gen_toks, temperature, top_k), group in jobs.items():
            group.sort(key=lambda job: -len(job[1]))
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                with self._autocast():
                    outputs = generate_batch(self.model, [prompt for _, prompt, _ in batch], max_gen_toks,
                                             temperature=temperature, top_k=top_k, stop_ids=(self.eot_token_id,))
                for (index, _, until), new in zip(batch, outputs):
                    texts[index] = postprocess_generated_text(self.tok_decode(new), stop=until, think_end_token=None)
                    self.cache_hook.add_partial("generate_until", requests[index].args, texts[index])
                progress.update(len(batch))
        progress.close()
        return texts

    # -- `--apply_chat_template`: prompts rendered with the checkpoint's chat template --------------------------

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.checkpoint_dir).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if not chat_template:
            return None
        if self.tokenizer.chat_template is None:
            raise UserError(f"--apply_chat_template: {self.tokenizer.checkpoint_dir} has no chat template")
        return self.tokenizer.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    # -- the packed forward -------------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def _score(self, keys: list[tuple[int, ...]],
               scored: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One packed forward over the inputs `keys[j][-max_length:]`; for each, with n = scored[j]:

            log-probs (n - 1,) of its own next tokens at the n - 1 positions before its last, whether each is the
            argmax (n - 1,), and the log-probs (vocab_size,) at its last position (whose next token differs
            within a group), all float32.
        """
        inputs = [torch.tensor(key[-self.max_length :], dtype=torch.long) for key in keys]
        total = sum(len(ids) for ids in inputs)
        row = packed_collate([{"input_ids": ids, "labels": ids} for ids in inputs], max_seq_length=total)
        self.tokens_forwarded += total
        with self._autocast():
            hidden = self.model(row["input_ids"].to(self.device), positions=row["positions"].to(self.device),
                                head=False)[0]  # (total, n_embd)
        shared_positions, shared_targets, last_positions = [], [], []
        end = 0
        for ids, n in zip(inputs, scored):
            end += len(ids)
            shared_positions.append(torch.arange(end - n, end - 1))
            shared_targets.append(ids[len(ids) - n + 1 :])  # position t predicts the input token at t + 1
            last_positions.append(end - 1)
        positions = torch.cat(shared_positions).to(self.device)  # (N,)
        targets = torch.cat(shared_targets).to(self.device)  # (N,)
        logprobs, greedy = [], []
        with self._autocast():
            for i in range(0, len(positions), HEAD_CHUNK):
                logits = self.model.lm_head(hidden[positions[i : i + HEAD_CHUNK]]).float()  # (chunk, vocab_size)
                wanted = targets[i : i + HEAD_CHUNK, None]  # (chunk, 1)
                logprobs.append((logits.gather(1, wanted) - logits.logsumexp(-1, keepdim=True)).squeeze(1))
                greedy.append(logits.argmax(-1) == wanted.squeeze(1))
            last = self.model.lm_head(hidden[last_positions]).float().log_softmax(-1)  # (len(keys), vocab_size)
        sizes = [n - 1 for n in scored]
        logprob = torch.cat(logprobs) if logprobs else torch.zeros(0, device=self.device)
        is_greedy = torch.cat(greedy) if greedy else torch.zeros(0, dtype=torch.bool, device=self.device)
        return list(zip(logprob.cpu().split(sizes), is_greedy.cpu().split(sizes), last.cpu()))
