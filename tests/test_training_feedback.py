"""ser-train's feedback: progress lines under cron, the cost said up front, and a hub id that
cannot be downloaded failing at once in one line."""

import io
import re
import time

import pytest
from click.testing import CliRunner

from ser.errors import ModelError
from ser.training.backbones import load_backbone
from ser.training.cli import main as train_main
from ser.training.progress import Stage, human_bytes

UNCACHED_ID = "ser-tests/no-such-speech-encoder"


def _no_network(*_args, **_kwargs):
    raise AssertionError("the network was used")


def test_offline_mode_fails_at_once_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.get_session", _no_network)
    with pytest.raises(ModelError, match=r"not in the Hugging Face cache .* offline mode is on"):
        load_backbone(UNCACHED_ID)


def test_an_unreachable_hub_is_one_request_then_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    class Unreachable:
        def head(self, url, timeout):
            calls.append((url, timeout))
            raise ConnectionError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.get_session", Unreachable)
    with pytest.raises(ModelError, match=r"cannot reach .*Name or service not known") as error:
        load_backbone(UNCACHED_ID)
    assert len(calls) == 1 and calls[0][1] <= 10 and "\n" not in str(error.value)


def test_a_missing_local_folder_is_not_looked_up_on_the_hub(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.get_session", _no_network)
    with pytest.raises(ModelError, match="no such folder"):
        load_backbone("./models/whisper-tiny.en")


def test_cli_offline_is_one_line(synthetic_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["neural", "--data", str(synthetic_manifest), "--out", str(tmp_path / "o"),
            "--backbone", UNCACHED_ID]  # fmt: skip
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 2
    assert result.output.startswith("Error:") and result.output.count("\n") == 1, result.output


def test_a_stage_logs_lines_off_a_terminal_even_while_a_step_is_slow():
    stream = io.StringIO()
    with Stage("encoding train", 10, "clip", detail="30 windows", stream=stream, interval_s=0.01):
        deadline = time.monotonic() + 30
        while stream.getvalue().count("0/10 clips") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # one long step: the timer must still report
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].endswith("ser-train: encoding train: 10 clips; 30 windows")
    assert sum("encoding train: 0/10 clips (0%)" in line for line in lines) >= 2
    assert lines[-1].endswith("encoding train: done, 0 clips in 0 s")


def test_neural_training_says_its_cost_and_logs_without_bars(synthetic_manifest, tiny_whisper,
                                                             tmp_path):  # fmt: skip
    cache = tmp_path / "cache"
    args = ["neural", "--data", str(synthetic_manifest), "--out", str(tmp_path / "o"),
            "--cache-dir", str(cache), "--backbone", str(tiny_whisper), "--window", "1",
            "--epochs", "2", "--views", "1", "--no-augment"]  # fmt: skip
    result = CliRunner().invoke(train_main, args)  # CliRunner's stderr is not a terminal
    assert result.exit_code == 0, result.output
    log = result.output
    assert "\r" not in log and "Loading weights" not in log
    assert "104 clips (train 64, validation 16, test 24); 104 windows" in log
    announced = re.search(r"encoder states cache: up to ([\d.]+ [KMG]?B)", log).group(1)
    assert f"in {cache / 'encoder-states'}" in log
    written = sum(f.stat().st_size for f in (cache / "encoder-states").rglob("*.npz"))
    value, unit = announced.split()
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert float(value) * scale == pytest.approx(written, rel=0.1), (
        announced,
        human_bytes(written),
    )
    for stage in (
        "encoding train: 64 clips; 64 windows to encode",
        "encoding test: done",
        "training head (seed 0): 2 epochs",
        "training head (seed 0): done, 2 epochs",
    ):
        assert stage in log  # fmt: skip
    again = CliRunner().invoke(train_main, args)
    assert "encoding train: 0 clips; 0 windows to encode, 64 clips cached" in again.output


def test_forest_training_logs_without_bars(synthetic_manifest, tmp_path):
    args = ["forest", "--data", str(synthetic_manifest), "--out", str(tmp_path / "o"),
            "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    assert "eGeMAPS features, train+validation: 80 clips; 0 of 80 cached in" in result.output
    assert "min_samples_leaf cross-validation: done, 6 values" in result.output
