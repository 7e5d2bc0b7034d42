"""Command-line conventions: -h, python -m, examples and exit statuses in the help, and export
check on every model kind."""

import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.batch import cli as batch_cli
from ser.batch.cli import main as batch_main
from ser.export.cli import main as export_main
from ser.training.cli import main as train_main

from synth import class_signal

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    (train_main, []), (train_main, ["forest"]), (train_main, ["neural"]),
    (export_main, []), (export_main, ["forest"]), (export_main, ["neural"]),
    (export_main, ["check"]), (batch_main, []), (batch_main, ["score"]),
    (batch_main, ["summarize"]),
]  # fmt: skip


@pytest.mark.parametrize(("command", "args"), COMMANDS)
def test_every_command_takes_h_and_ends_its_help_with_examples(command, args):
    short = CliRunner().invoke(command, [*args, "-h"])
    assert (
        short.exit_code == 0
        and short.output == CliRunner().invoke(command, [*args, "--help"]).output
    )
    examples = short.output.split("Examples:\n", 1)[1]
    assert 2 <= sum(line.startswith("    ser-") for line in examples.splitlines()) <= 3


def test_score_help_lists_every_exit_status():
    """Each EXIT_* status of ser-batch, 1 for a crash, and 128 + signal for SIGINT and SIGTERM."""
    output = CliRunner().invoke(batch_main, ["score", "-h"]).output
    statuses = output.split("Exit status:\n", 1)[1].splitlines()
    listed = [int(line.split()[0]) for line in statuses if line.strip()]
    codes = {value for name, value in vars(batch_cli).items() if name.startswith("EXIT_")}
    signals = {128 + signum for signum in batch_cli.STOP_SIGNALS}
    assert listed == sorted(listed) and set(listed) == {*codes, 1, *signals}
    assert "Exit status:" in batch_cli.SCORE_EPILOG


@pytest.mark.parametrize(
    ("module", "names"),
    [("ser", ["train", "export", "batch"]), ("ser.batch", ["score", "summarize"]),
     ("ser.training", ["forest", "neural"]),
     ("ser.export", ["check", "ensemble", "forest", "neural", "requantize", "speaker"])],
)  # fmt: skip
def test_python_dash_m_runs_the_same_commands(module, names, tmp_path):
    # cwd outside the checkout, so the installed package is imported (as CI installs it)
    result = subprocess.run([sys.executable, "-m", module, "-h"], capture_output=True, text=True,
                            check=False, timeout=120, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"python -m {module}" in result.stdout
    commands = result.stdout.split("Commands:\n", 1)[1]
    listed = [line.split()[0] for line in commands.splitlines()[: len(names)]]
    assert sorted(listed) == sorted(names)


def test_python_dash_m_ser_batch_scores_without_loading_torch(tmp_path):
    sf.write(tmp_path / "a.wav", class_signal(3, 1.0, seed=4), 16_000)
    code = (
        "import sys; from ser.__main__ import main\n"
        "try:\n    main(['batch', 'score', sys.argv[1], '-o', '-', '--model', 'forest'])\n"
        "except SystemExit as done:\n    print('exit', done.code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.wav")],
                            capture_output=True, text=True, check=False, timeout=300,
                            cwd=tmp_path)  # fmt: skip
    assert result.stdout.splitlines()[-1] == "exit 0 False", result.stderr
    assert "status" in result.stdout.splitlines()[0]  # the CSV header went to stdout


def test_export_check_runs_the_gates_on_a_forest(forest_onnx, trained_forest, tmp_path):
    model_dir = trained_forest.out_dir
    args = ["check", str(forest_onnx), "--model", str(model_dir)]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 0, result.output
    assert "parity ok: 24 inputs" in result.output and "batch invariance ok" in result.output
    other = tmp_path / "other-forest"
    shutil.copytree(model_dir, other)
    forest = joblib.load(other / "forest.joblib")
    forest.estimators_ = forest.estimators_[:10]  # not the forest that was exported
    joblib.dump(forest, other / "forest.joblib")
    result = CliRunner().invoke(export_main, ["check", str(forest_onnx), "--model", str(other)])
    assert result.exit_code == 2 and "ONNX disagrees with the original model" in result.output


def test_export_check_says_what_it_needs(forest_onnx, trained_forest, tmp_path):
    def run(*args):
        result = CliRunner().invoke(export_main, ["check", str(forest_onnx), *args])
        assert result.exit_code == 2 and result.output.startswith(("Error:", "Usage:"))
        return result.output

    assert "--checkpoint (neural) or --model (forest)" in run()
    assert "check it with --model" in run("--checkpoint", str(tmp_path))
    assert "--data is for neural models" in run("--model", str(trained_forest.out_dir),
                                                "--data", str(tmp_path))  # fmt: skip
    helptext = CliRunner().invoke(export_main, ["check", "-h"]).output
    assert "--quantize" not in helptext and "validation" not in helptext
