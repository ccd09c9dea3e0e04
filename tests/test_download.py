"""`download()` and `scripts/download.py` against a loopback Hub (tests/hub_server.py) with the real huggingface_hub."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants, hf_hub_download, list_repo_files, snapshot_download

from hub_server import FakeHub
from lit_gpt.download import STATE_DIR, download
from lit_gpt.utils import UserError

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
rng = random.Random(0)


def _blob(n: int) -> bytes:
    return rng.randbytes(n)


def _index(weight_map: dict[str, str]) -> bytes:
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()


def _on_disk(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` except the downloader's own state, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and STATE_DIR not in p.relative_to(folder).parts
    }


def _run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python scripts/download.py ARGS` as a user runs it (the `hub` fixture's environment is inherited)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "download.py"), *args],
        cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )


# A repo like meta-llama/Llama-2-7b-hf or mistralai/Mistral-7B-v0.1: the same weights in several formats.
CONVERSION_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "generation_config.json": b'{"do_sample": true}',
    "tokenizer.json": b'{"model": {}}',
    "tokenizer.model": _blob(300),
    "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
    "special_tokens_map.json": b'{"bos_token": "<s>"}',
    "model.safetensors.index.json": _index({"a.weight": "model-00001-of-00002.safetensors",
                                            "b.weight": "model-00002-of-00002.safetensors",
                                            "c.weight": "model-00002-of-00002.safetensors"}),
    "model-00001-of-00002.safetensors": _blob(3000),
    "model-00002-of-00002.safetensors": _blob(2000),
}
OTHER_FILES = {
    "README.md": b"# model card",
    ".gitattributes": b"*.safetensors filter=lfs",
    "pytorch_model.bin.index.json": _index({"a.weight": "pytorch_model-00001-of-00002.bin"}),
    "pytorch_model-00001-of-00002.bin": _blob(1000),
    "pytorch_model-00002-of-00002.bin": _blob(1000),
    "consolidated.safetensors": _blob(1000),
    "original/consolidated.00.pth": _blob(1000),
    "model.Q4_K_M.gguf": _blob(1000),
    "onnx/model.onnx": _blob(1000),
    "flax_model.msgpack": _blob(1000),
    "tf_model.h5": _blob(1000),
}


def test_fetches_only_conversion_files_and_prefers_safetensors(hub: FakeHub, tmp_path: Path, capsys) -> None:
    hub.add_repo("org/llama", {**CONVERSION_FILES, **OTHER_FILES})

    out = download("org/llama", checkpoint_dir=tmp_path / "checkpoints")

    assert out == tmp_path / "checkpoints" / "org" / "llama"
    assert _on_disk(out) == CONVERSION_FILES  # identical bytes, and nothing else
    assert sorted(hub.fetched("org/llama")) == sorted(CONVERSION_FILES)  # each fetched once; the rest never
    assert all("authorization" not in r.headers for r in hub.requests)  # no token anywhere: none sent
    assert "9 file(s) downloaded" in capsys.readouterr().out

    # A second run transfers nothing; after an upstream change only the changed file comes again.
    download("org/llama", checkpoint_dir=tmp_path / "checkpoints")
    assert len(hub.fetched("org/llama")) == len(CONVERSION_FILES)
    assert "0 file(s) downloaded, 9 already there" in capsys.readouterr().out
    hub.add_repo("org/llama", {**CONVERSION_FILES, **OTHER_FILES, "config.json": b'{"model_type": "mistral"}'})
    download("org/llama", checkpoint_dir=tmp_path / "checkpoints")
    assert hub.fetched("org/llama")[len(CONVERSION_FILES):] == ["config.json"]
    assert (out / "config.json").read_bytes() == b'{"model_type": "mistral"}'


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_takes_bin_weights_when_the_repo_has_no_safetensors(hub: FakeHub, tmp_path: Path, sharded: bool) -> None:
    if sharded:
        weights = {"pytorch_model.bin.index.json": _index({"a": "pytorch_model-00001-of-00002.bin",
                                                           "b": "pytorch_model-00002-of-00002.bin"}),
                   "pytorch_model-00001-of-00002.bin": _blob(700), "pytorch_model-00002-of-00002.bin": _blob(500)}
    else:
        weights = {"pytorch_model.bin": _blob(900)}
    wanted = {"config.json": b"{}", "tokenizer.model": _blob(50), **weights}
    hub.add_repo("org/neox", {**wanted, "training_args.bin": _blob(10), "model.gguf": _blob(10)})

    out = download("org/neox", checkpoint_dir=tmp_path)

    assert _on_disk(out) == wanted
    assert sorted(hub.fetched("org/neox")) == sorted(wanted)


def test_cli_gated_repo_without_token_fails_in_one_line(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("org/gated", CONVERSION_FILES, gated=True, access=("hf_secret_token",))

    result = _run_cli("--repo_id", "org/gated", "--checkpoint_dir", "ckpt", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: org/gated is gated: accept its license at {hub.url}/org/gated and pass --access_token or set HF_TOKEN"
    ]
    assert [r.status for r in hub.requests if r.filename] == [401]  # stopped at the first file
    assert all("authorization" not in r.headers for r in hub.requests)
    assert not (tmp_path / "ckpt").exists()  # nothing written


def test_cli_gated_repo_with_token_downloads_without_printing_it(hub: FakeHub, tmp_path: Path) -> None:
    token = "hf_secret_token_123"
    hub.add_repo("org/gated", CONVERSION_FILES, gated=True, access=(token,))

    # TQDM_POSITION=-1 makes huggingface_hub draw its bars without a terminal, as they appear in one.
    result = _run_cli("--repo_id", "org/gated", "--access_token", token, "--checkpoint_dir", "ckpt", cwd=tmp_path,
                      TQDM_POSITION="-1")

    assert result.returncode == 0, result.stderr
    assert _on_disk(tmp_path / "ckpt" / "org" / "gated") == CONVERSION_FILES
    assert token not in result.stdout + result.stderr
    assert "model-00001-of-00002.safetensors: 100%" in result.stderr  # huggingface_hub's progress bar
    # The token goes to the Hub on every request, and never to the CDN serving the weights.
    assert {r.headers.get("authorization") for r in hub.requests if not r.cdn} == {f"Bearer {token}"}
    cdn = [r for r in hub.requests if r.cdn]
    assert len(cdn) == 3 and all("authorization" not in r.headers for r in cdn)


def test_hf_token_env_var_is_used_when_no_token_is_passed(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    hub.add_repo("org/gated", CONVERSION_FILES, gated=True, access=("hf_from_env",))
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")

    out = download("org/gated", checkpoint_dir=tmp_path)

    assert _on_disk(out) == CONVERSION_FILES
    assert {r.headers.get("authorization") for r in hub.requests if not r.cdn} == {"Bearer hf_from_env"}


def test_token_without_access_or_unknown_token_get_their_own_advice(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("org/gated", CONVERSION_FILES, gated=True, access=("hf_allowed",))
    hub.add_token("hf_valid_but_not_approved")

    with pytest.raises(UserError) as no_access:
        download("org/gated", access_token="hf_valid_but_not_approved", checkpoint_dir=tmp_path)
    assert str(no_access.value).startswith("org/gated is gated and your token has no access to it yet: accept")
    with pytest.raises(UserError) as unknown:
        download("org/gated", access_token="hf_typo", checkpoint_dir=tmp_path)
    assert str(unknown.value).startswith("the Hub rejected the access token (invalid or expired)")
    for message in (str(no_access.value), str(unknown.value)):
        assert "hf_valid_but_not_approved" not in message and "hf_typo" not in message and "\n" not in message


def test_missing_repo_revision_and_weights_are_clear_errors(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("org/llama", CONVERSION_FILES)
    hub.add_repo("org/private", CONVERSION_FILES, private=True, access=("hf_owner",))
    hub.add_repo("org/gguf-only", {"model.Q4_K_M.gguf": _blob(100), "README.md": b"#"})

    with pytest.raises(UserError, match=r"^org/lama not found on the Hub at .*\(check the spelling; private"):
        download("org/lama", checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"^org/private not found on the Hub"):  # private looks missing
        download("org/private", checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"^revision 'v9' not found in org/llama"):
        download("org/llama", revision="v9", checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"^org/gguf-only has no weights in safetensors or PyTorch .bin layout.*"
                                        r"it has model\.Q4_K_M\.gguf"):
        download("org/gguf-only", checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"must look like ORG/NAME"):
        download("llama", checkpoint_dir=tmp_path)
    assert hub.fetched() == []  # every error came before any file transfer


def test_unreachable_or_offline_hub_points_at_network_settings(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)

    with pytest.raises(UserError, match=rf"^cannot reach the Hub at {dead} \(ConnectError\): .*HF_ENDPOINT"):
        download("org/llama", checkpoint_dir=tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(UserError, match=r"^HF_HUB_OFFLINE is set, so nothing can be downloaded"):
        download("org/llama", checkpoint_dir=tmp_path)
    assert not (tmp_path / "org").exists()


def test_interrupted_download_resumes_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    big = _blob(12 * MiB + 12345)  # larger than huggingface_hub's 10 MiB write chunk, so a prefix reaches disk
    files = {"config.json": b"{}", "model.safetensors": big}
    hub.add_repo("org/big", files)
    # The first GET stops after 11 MiB; huggingface_hub retries once in-process (with Range), which gets a 503.
    hub.cut("org/big", "model.safetensors", after_bytes=11 * MiB)
    hub.fail("org/big", "model.safetensors", 503)

    with pytest.raises(UserError, match=r"HTTP 503 .*run the same command again to resume"):
        download("org/big", checkpoint_dir=tmp_path)
    out = tmp_path / "org" / "big"
    [partial] = (out / STATE_DIR).glob("model.safetensors.*.incomplete")
    kept = partial.stat().st_size
    assert 0 < kept <= 11 * MiB and partial.read_bytes() == big[:kept]
    assert not (out / "model.safetensors").exists()

    download("org/big", checkpoint_dir=tmp_path)

    assert (out / "model.safetensors").read_bytes() == big
    first, retry, resumed = hub.body_requests("org/big", "model.safetensors")
    assert (first.range_start, first.body_bytes) == (None, 11 * MiB)
    assert (retry.range_start, retry.status) == (kept, 503)
    assert (resumed.range_start, resumed.status, resumed.body_bytes) == (kept, 206, len(big) - kept)
    assert not partial.exists()


def test_cli_resumes_after_ctrl_c(hub: FakeHub, tmp_path: Path) -> None:
    big = _blob(11 * MiB)
    hub.add_repo("org/big", {"config.json": b"{}", "model.safetensors": big})
    hub.cut("org/big", "model.safetensors", after_bytes=10 * MiB + 1000, stall=True)  # then hangs, like a dead link
    args = ("--repo_id", "org/big", "--checkpoint_dir", str(tmp_path))
    state = tmp_path / "org" / "big" / STATE_DIR

    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "download.py"), *args], cwd=tmp_path,
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size >= 10 * MiB for p in state.glob("*.incomplete")):  # a prefix reached disk
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    hub.release()
    [partial] = state.glob("model.safetensors.*.incomplete")
    kept = partial.stat().st_size
    assert kept >= 10 * MiB

    result = _run_cli(*args, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "model.safetensors: resuming at 10.0 MiB of 11.0 MiB" in result.stdout
    assert (tmp_path / "org" / "big" / "model.safetensors").read_bytes() == big
    resumed = hub.body_requests("org/big", "model.safetensors")[-1]
    assert (resumed.range_start, resumed.status, resumed.body_bytes) == (kept, 206, len(big) - kept)


def test_cli_without_repo_id_lists_supported_models(hub: FakeHub, tmp_path: Path) -> None:
    from lit_gpt.config import configs

    result = _run_cli(cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted({c.hf_repo_id for c in configs})
    assert "meta-llama/Llama-2-7b-hf" in lines and all(line.count("/") == 1 for line in lines)
    assert hub.requests == []  # listing needs no network


def test_hub_server_serves_dataset_repos_to_huggingface_hub(hub: FakeHub, tmp_path: Path) -> None:
    """Data-preparation tests reuse the server for datasets (Alpaca, Dolly, LIMA) downloaded with huggingface_hub."""
    files = {"data/train.jsonl": b'{"instruction": "hi"}\n', "README.md": b"# data", "train.parquet": _blob(64)}
    hub.add_repo("org/data", files, repo_type="dataset")

    path = hf_hub_download("org/data", "data/train.jsonl", repo_type="dataset", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == files["data/train.jsonl"]
    assert sorted(list_repo_files("org/data", repo_type="dataset")) == sorted(files)
    folder = snapshot_download("org/data", repo_type="dataset", local_dir=tmp_path / "data")
    assert {k: v for k, v in _on_disk(Path(folder)).items() if not k.startswith(".cache/")} == files
    with pytest.raises(Exception, match="Repository Not Found"):
        hf_hub_download("org/data", "README.md")  # the same id as a model repo does not exist
