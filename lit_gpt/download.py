"""Download a model from the Hugging Face Hub into `checkpoints/ORG/NAME/`: only the files conversion needs.

Files are fetched one by one over plain HTTP with `huggingface_hub`'s metadata call (`get_hf_file_metadata`) and
streaming `http_get`, not with `snapshot_download`: in `huggingface_hub` 2.4 a file interrupted mid-way is deleted
(its temporary name is unique per attempt), so a killed run would start large shards over. Here the partial file
is kept under `.download/` in the checkpoint folder, named after a hash of the file's ETag (its content hash), and the
next run continues it with an HTTP Range request; a finished file is skipped when its recorded ETag is still current.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import WeakFileLock, build_hf_headers

from lit_gpt.utils import UserError, read_json

# Non-weight files conversion and tokenization read; those a repo lacks are skipped.
METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
# Weight layouts in order of preference, each as (index of a sharded checkpoint, single-file checkpoint): the
# transformers conventions. Shards are taken from the index's weight_map, so `consolidated.*`, `original/`, GGUF,
# ONNX, Flax and TF files are never fetched, and `.bin` only when the repo has no safetensors checkpoint.
WEIGHT_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
# Folder inside the checkpoint folder with partial downloads and the ETag of each finished file.
STATE_DIR = ".download"


def download(
    repo_id: str | None = None,
    access_token: str | None = None,
    checkpoint_dir: Path = Path("checkpoints"),
    revision: str | None = None,
) -> Path | None:
    """Download a model's config, tokenizer and weights from the Hugging Face Hub into CHECKPOINT_DIR/ORG/NAME.

    Weights come as safetensors when the repo has them, otherwise as PyTorch .bin; other formats are never
    fetched. Running the same command again resumes an interrupted download and skips finished files.
    Without --repo_id, prints the repo ids of the supported models, one per line.

    Args:
        repo_id: Model repo on the Hub, e.g. meta-llama/Llama-2-7b-hf. Leave out to list the supported models.
        access_token: Hugging Face token for gated or private repos (never printed). Defaults to the HF_TOKEN
            environment variable or a stored `hf auth login`.
        checkpoint_dir: Parent folder; the files land in CHECKPOINT_DIR/ORG/NAME.
        revision: Branch, tag or commit to download. Defaults to the repo's main branch.

    Returns:
        The folder holding the downloaded files, or None when only listing.
    """
    if repo_id is None:
        _print_supported_models()
        return None
    if repo_id.count("/") != 1:
        raise UserError(f"--repo_id {repo_id!r} must look like ORG/NAME, as in https://huggingface.co/ORG/NAME")
    local_dir = Path(checkpoint_dir) / repo_id

    with _hub_errors(repo_id, revision, local_dir):
        info = HfApi(token=access_token).model_info(repo_id, revision=revision)
        assert info.sha is not None, "the Hub always reports the commit of a revision"
        repo_files = {sibling.rfilename for sibling in info.siblings or ()}
        names = select_files(repo_id, repo_files)
        # Pin every file to the commit listed above, so a push to the repo mid-download cannot mix versions.
        # Looking the first files up before writing anything means a gated repo leaves no empty folder behind.
        remotes = [_lookup(repo_id, name, info.sha, access_token) for name in names]
        state = local_dir / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        # Two runs appending to the same partial file would corrupt it; a second run waits, then skips.
        with WeakFileLock(state / ".lock"):
            fetched = [_fetch(remote, access_token, local_dir) for remote in remotes]
            if names[-1].endswith(".index.json"):
                # Each shard is looked up just before its download: signed CDN URLs expire.
                for name in shard_names(local_dir / names[-1], repo_files):
                    fetched.append(_fetch(_lookup(repo_id, name, info.sha, access_token), access_token, local_dir))
    print(f"{repo_id}: {sum(fetched)} file(s) downloaded, {len(fetched) - sum(fetched)} already there, in {local_dir}")
    return local_dir


def select_files(repo_id: str, repo_files: Iterable[str]) -> list[str]:
    """The files to fetch first: the metadata files present, then the weights (an index last, if sharded).

    Raises UserError when the repo has no config.json or no weights in a supported layout.
    """
    files = set(repo_files)
    for index, single in WEIGHT_LAYOUTS:
        weights = [name for name in (index, single) if name in files]
        if weights:
            break
    else:
        found = sorted(f for f in files if f.endswith((".safetensors", ".bin", ".gguf", ".pth", ".pt", ".onnx")))
        raise UserError(
            f"{repo_id} has no weights in safetensors or PyTorch .bin layout (model.safetensors, "
            f"pytorch_model.bin or their .index.json); it has {', '.join(found[:4]) or 'no weight files'}. "
            "Pick the repo of the original transformers model rather than a GGUF/ONNX/other export"
        )
    if "config.json" not in files:
        raise UserError(f"{repo_id} has no config.json, so it is not a transformers checkpoint lit_gpt can convert")
    return [name for name in METADATA_FILES if name in files] + weights[:1]


def shard_names(index_path: Path, repo_files: set[str]) -> list[str]:
    """The weight files a downloaded `*.index.json` points to; each must exist in the repo."""
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{index_path}: no 'weight_map' in the repo's index file; the checkpoint is broken upstream")
    shards = sorted(set(weight_map.values()))
    missing = [name for name in shards if name not in repo_files]
    if missing:
        raise UserError(f"{index_path} lists {missing[0]}, which the repo does not have; the checkpoint is broken")
    return shards


@dataclass(frozen=True)
class _RemoteFile:
    """One repo file as a HEAD request describes it."""

    name: str
    url: str  # where to GET it: the Hub itself, or a CDN with a signed URL
    etag: str  # the content hash (sha256 for LFS files, the git blob id for others)
    size: int | None
    on_hub: bool  # False for a CDN, which must not receive the token


def download_file(repo_id: str, filename: str, local_dir: Path, repo_type: str = "model",
                  token: str | None = None) -> Path:
    """`local_dir/filename`: one file of a Hub repo, fetched as `download` fetches a model's files (resumable, the
    same bytes not fetched twice, no local path chosen by the server: `huggingface_hub`'s own cache names blobs after
    the server's ETag). Without a connection, the copy an earlier run fetched is used. Raises the Hub's errors."""
    dest, state = Path(local_dir) / filename, Path(local_dir) / STATE_DIR
    try:
        remote = _lookup(repo_id, filename, None, token, repo_type)
    except (httpx2.TransportError, OfflineModeIsEnabled):
        if dest.is_file() and (state / f"{filename}.etag").is_file():
            print(f"cannot reach {constants.ENDPOINT}; using {dest}, fetched before", file=sys.stderr)
            return dest
        raise
    state.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(state / ".lock"):
        _fetch(remote, token, Path(local_dir))
    return dest


def _lookup(repo_id: str, name: str, commit: str | None, token: str | None, repo_type: str = "model") -> _RemoteFile:
    """HEAD `name` at `commit` (None: the main branch); raises the Hub's errors (gated, missing, ...)."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or parts[0] == STATE_DIR or "\\" in name or "\0" in name:
        raise UserError(f"{repo_id} lists a file outside the repo ({name!r}); refusing to write it")
    url = hf_hub_url(repo_id, name, repo_type=repo_type, revision=commit)
    meta = get_hf_file_metadata(url, token=token, retry_on_errors=True)
    assert meta.etag is not None, "get_hf_file_metadata raises when the ETag is missing"
    return _RemoteFile(name, meta.location, meta.etag, meta.size, urlsplit(meta.location)[:2] == urlsplit(url)[:2])


def _fetch(remote: _RemoteFile, token: str | None, local_dir: Path) -> bool:
    """Make `local_dir/NAME` the file `remote` describes, resuming a partial download. True if bytes were fetched."""
    name = remote.name
    dest, state = local_dir / name, local_dir / STATE_DIR
    marker = state / f"{name}.etag"
    current = marker.is_file() and marker.read_text() == remote.etag
    if current and dest.is_file() and remote.size in (None, dest.stat().st_size):
        print(f"{name}: already downloaded")
        return False

    # named by a hash of the ETag: the server chooses the ETag, and nothing it sends may choose a path
    partial = state / f"{name}.{hashlib.sha256(remote.etag.encode()).hexdigest()[:16]}.incomplete"
    partial.parent.mkdir(parents=True, exist_ok=True)
    for stale in partial.parent.glob(f"{glob.escape(Path(name).name)}.*.incomplete"):  # an older version's
        if stale != partial:
            stale.unlink()
    headers = build_hf_headers(token=token)
    if not remote.on_hub:
        headers.pop("authorization", None)
    with partial.open("ab") as f:
        have = f.tell()
        if remote.size is not None and have > remote.size:  # cannot be a prefix of this file: start over
            f.truncate(0)
            have = 0
        if have:
            total = f" of {remote.size / 2**20:.1f} MiB" if remote.size is not None else ""
            print(f"{name}: resuming at {have / 2**20:.1f} MiB{total}")
        http_get(remote.url, f, resume_size=have, headers=headers, expected_size=remote.size, displayed_filename=name)
    marker.unlink(missing_ok=True)  # until the marker is rewritten, `dest` does not count as current
    os.replace(partial, dest)
    marker.write_text(remote.etag)
    return True


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, local_dir: Path) -> Iterator[None]:
    """Turn what `huggingface_hub` raises into one-line `UserError`s that say what to do.

    Messages are built here rather than from the exceptions' text, which can be long; none contains the token.
    """
    page = f"{constants.ENDPOINT}/{repo_id}"
    resume = f"run the same command again to resume (finished and partial files in {local_dir} are kept)"
    try:
        yield
    except GatedRepoError as e:  # before RepositoryNotFoundError, its parent class
        if e.response.status_code == 403:  # a valid token without access to this repo
            raise UserError(
                f"{repo_id} is gated and your token has no access to it yet: accept its license at {page} with "
                "the token's account (approval can take a while), then pass --access_token or set HF_TOKEN"
            ) from None
        raise UserError(
            f"{repo_id} is gated: accept its license at {page} and pass --access_token or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{repo_id} not found on the Hub at {constants.ENDPOINT} (check the spelling; private repos need a "
            "token: pass --access_token or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise UserError(
            f"revision {revision!r} not found in {repo_id} (check the branch, tag or commit at {page})"
        ) from None
    except HfHubHTTPError as e:
        status = e.response.status_code
        if status == 401:  # not a gated or missing repo: the Hub refused the token itself
            raise UserError(
                f"the Hub rejected the access token (invalid or expired): create one at "
                f"{constants.ENDPOINT}/settings/tokens and pass --access_token or set HF_TOKEN"
            ) from None
        detail = f" ({e.server_message.strip().rstrip('.')})" if e.server_message else ""
        raise UserError(f"the Hub answered HTTP {status} for {repo_id}{detail}; try again later: {resume}") from None
    except HFValidationError:
        raise UserError(f"--repo_id {repo_id!r} is not a valid repo id; expected ORG/NAME as in {page}") from None
    except OfflineModeIsEnabled:
        raise UserError(
            f"HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it to download {repo_id}"
        ) from None
    except httpx2.TransportError as e:
        raise UserError(
            f"cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}): check your connection or proxy, "
            f"or set HF_ENDPOINT to a reachable mirror; {resume}"
        ) from None
    except FileMetadataError:  # a HEAD answer without X-Repo-Commit or ETag
        raise UserError(
            f"{constants.ENDPOINT} does not answer like the Hugging Face Hub: check HF_ENDPOINT and your proxy"
        ) from None
    except OSError as e:
        if e.errno is not None:  # the file system, e.g. a full disk
            raise UserError(f"cannot write to {local_dir}: {e.strerror}") from None
        if "Consistency check failed" in str(e):  # http_get: the connection ended early, retries did not help
            raise UserError(f"a file of {repo_id} arrived incomplete (network trouble?); {resume}") from None
        raise


def _print_supported_models() -> None:
    """Print the Hub repo id of every model `lit_gpt.config` knows, sorted, one per line."""
    from lit_gpt.config import configs  # lazily: only listing needs the model table

    print("\n".join(sorted({c.hf_repo_id for c in configs if c.hf_repo_id}, key=str.lower)))
    print("Download one with: python scripts/download.py --repo_id ORG/NAME", file=sys.stderr)
