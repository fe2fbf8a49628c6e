"""The console script end to end, as a subprocess: search, report, export, and bad input exit codes (in this
process where the input is refused before any trial)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "tests" / "data" / "tiny.yaml")


def autoprune(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "autoprune.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def autoprune_here(*args):
    """The CLI in this process, its exit code and output as a subprocess's: for bad input, refused before any
    trial, without a fresh interpreter's imports for each case (7 s a case as a subprocess, 0.01 s here)."""
    from typer.testing import CliRunner

    from autoprune.cli import app

    outcome = CliRunner().invoke(app, [str(a) for a in args])
    return subprocess.CompletedProcess(args, outcome.exit_code, outcome.stdout, outcome.stderr)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One embedded-default search shared by the report and export tests."""
    out = tmp_path_factory.mktemp("run")
    proc = autoprune("search", "--space", TINY, "--trials", "3", "--budget-mb", "0.5", "--seed", "0",
                     "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_search_writes_the_result_files(run_dir):
    """The embedded default runs with no model or data argument and writes its files."""
    out, proc = run_dir
    for name in ("pareto.json", "trials.csv", "pareto.png", "study.db", "best/model.ts", "best/policy.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "pareto.json").read_text())
    assert saved["pareto"] and all(c["size_mb"] <= 0.5 for c in saved["pareto"])
    assert saved["reference_latency_ms"] > 0, "candidates were timed against the dense model"
    assert "Pareto front" in proc.stdout and "search overhead" in proc.stdout


def test_no_interleave_times_candidates_alone(tmp_path):
    """--no-interleave reaches the profile: no dense reference is timed or recorded."""
    proc = autoprune("search", "--space", TINY, "--trials", "1", "--seed", "0", "--out", tmp_path,
                     "--no-interleave", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "pareto.json").read_text())["reference_latency_ms"] is None


def test_rerun_resumes_without_new_trials(run_dir):
    """The same command again finds the study complete and runs nothing new."""
    out, _ = run_dir
    proc = autoprune("search", "--space", TINY, "--trials", "3", "--budget-mb", "0.5", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front" in proc.stdout and "of 3 trials" in proc.stdout


def test_report_reprints_the_front(run_dir):
    out, _ = run_dir
    proc = autoprune("report", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front" in proc.stdout


def test_export_writes_a_model_that_matches(run_dir, tmp_path):
    """export writes policy, weights and a TorchScript file whose outputs match the saved weights' model."""
    out, _ = run_dir
    proc = autoprune("export", "--out", out, "--to", tmp_path / "exp", "--format", "torchscript")
    assert proc.returncode == 0, proc.stderr
    standalone = torch.jit.load(str(tmp_path / "exp" / "model.ts"))
    assert standalone(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_refine_saves_every_pruned_candidate_with_its_new_accuracy(run_dir, tmp_path):
    """refine fine-tunes the front's pruned candidates and writes each as an exported model, plus a summary."""
    out, _ = run_dir
    proc = autoprune("refine", "--out", out, "--steps", "5", "--to", tmp_path / "ref", "--format", "torchscript")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "ref" / "refined.json").read_text())
    front = json.loads((out / "pareto.json").read_text())["pareto"]
    pruned = {c["number"] for c in front if any(lp["sparsity"] > 0 for lp in c["policy"]["layers"].values())}
    assert {c["number"] for c in summary["candidates"]} == pruned and pruned
    for c in summary["candidates"]:
        assert c["steps"] == 5 and 0 <= c["metric"] <= 1
        standalone = torch.jit.load(str(tmp_path / "ref" / f"trial_{c['number']:05d}" / "model.ts"))
        assert standalone(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps must be a positive integer"),
    (["--steps", "5", "--trial", "999"], "are not Pareto candidates"),
    (["--steps", "5", "--lr", "0"], "lr must be a positive number"),
    (["--steps", "5", "--format", "pdf"], "unknown export format"),
    (["--steps", "5", "--int8-min-agreement", "1.5"], "int8 minimum agreement must be in [0, 1]"),
    (["--steps", "5", "--distill-hidden", "1"], "it needs distillation (--distill)"),
    (["--steps", "5", "--distill", "--distill-hidden", "1"], "no ModuleList entry holds an attention"),
])
def test_refine_bad_input_exits_2(run_dir, args, message):
    out, _ = run_dir
    proc = autoprune_here("refine", "--out", out, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.replace("\n", " ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--space", "tests/data/missing.yaml"], "neither a built-in space"),
    (["--model", "no_such_pkg.models:build", "--data", "no_such_pkg.data:dm"], "cannot import"),
    (["--model", "examples.custom_model:build"], "give both --model and --data"),
    (["--budget-ms", "0"], "positive"),
    (["--sampler", "annealing", "--trials", "1"], "unknown sampler"),
    (["--runtime", "tvm"], "profile runtime must be one of"),
    (["--space", "compress", "--trials", "1"], "use --runtime onnxruntime"),
    (["--fidelity", "maybe"], "--fidelity must be one of"),
    (["--seed", "-1"], "seed (--seed) must be an integer"),
    (["--seed", "99999999999"], "seed (--seed) must be an integer"),
    (["--timeout", "-1"], "must be a positive number"),
    (["--budget-ms", "inf"], "must be a positive number"),
    (["--timeout", "60", "--time-budget", "600"], "not both"),
    (["--time-budget", "0"], "time_budget (--time-budget) must be a positive number"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, message, tmp_path):
    proc = autoprune_here("search", "--out", tmp_path, "--no-progress", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


def test_weights_that_do_not_fit_exit_2(tmp_path):
    """A weights file for another architecture is named in a one-paragraph error."""
    wrong = tmp_path / "wrong.pt"
    torch.save({"0.weight": torch.zeros(3, 3)}, wrong)
    proc = autoprune("search", "--model", "examples.custom_model:build", "--data", "examples.custom_model:loaders",
                     "--weights", wrong, "--out", tmp_path, "--no-progress")
    assert proc.returncode == 2
    assert "does not fit" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_space_field_is_named(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("version: 1\nfinetune: {max_steps: -1}\n")
    proc = autoprune("search", "--space", space, "--out", tmp_path, "--no-progress")
    assert proc.returncode == 2 and "finetune.max_steps" in proc.stderr


def test_storage_comes_from_the_environment_when_not_given(tmp_path):
    """$AUTOPRUNE_STORAGE stands for --storage, so a database password need not appear in ps or history."""
    journal = tmp_path / "env" / "study.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUTOPRUNE_STORAGE": str(journal)}
    proc = subprocess.run([sys.executable, "-m", "autoprune.cli", "search", "--space", TINY, "--trials", "1",
                           "--out", str(tmp_path / "run"), "--no-progress"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert journal.is_file() and not (tmp_path / "run" / "study.db").exists()


def test_a_storage_url_missing_a_slash_exits_2_without_printing_the_password(tmp_path):
    proc = autoprune("search", "--storage", "postgresql:/u:SECRET@host/db", "--out", tmp_path / "run", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "missing a slash" in proc.stderr.replace("\n", " ") and "SECRET" not in proc.stdout + proc.stderr


def test_export_bad_input_exits_2(run_dir, tmp_path):
    out, _ = run_dir
    proc = autoprune("export", "--out", out, "--to", tmp_path / "exp", "--format", "pdf")
    assert proc.returncode == 2 and "unknown export format" in proc.stderr, proc.stderr
    (tmp_path / "file").write_text("x")
    proc = autoprune("export", "--out", out, "--to", tmp_path / "file")
    assert proc.returncode == 2 and "is a file" in proc.stderr, proc.stderr
    proc = autoprune("export", "--out", out, "--to", tmp_path / "exp", "--int8-max-error", "0")
    assert proc.returncode == 2 and "int8 maximum relative error must be above 0" in proc.stderr, proc.stderr


def test_export_builds_the_model_named_on_the_command_line_and_refuses_another_one(run_dir, tmp_path):
    """export --model names the code that builds the base model instead of the study's record (which anyone
    who writes the storage chooses); a model that is not the one the study pruned is refused with exit 2."""
    out, _ = run_dir
    (tmp_path / "other.py").write_text("from autoprune.demo import DigitsCNN\n\ndef build():\n"
                                      "    return DigitsCNN(width=8)\n")
    proc = autoprune("export", "--out", out.resolve(), "--to", tmp_path / "exp", "--model", "other:build",
                     "--format", "torchscript", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.replace("\n", " ")
    assert "the study recorded 'embedded:digits'" in err and "is not the one study" in err


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"version: 1\nlayers: auto\ndescription: \xff\xfe caf\xe9\n", "not UTF-8"),
])
def test_an_empty_or_undecodable_space_file_exits_2(tmp_path, content, message):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    proc = autoprune("search", "--space", path, "--out", tmp_path / "run", "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr.replace("\n", " "), proc.stderr


def test_an_out_directory_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "taken").write_text("x")
    proc = autoprune("search", "--out", tmp_path / "taken", "--no-progress")
    assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr.replace("\n", " "), proc.stderr


def test_a_truncated_digits_model_exits_2_and_never_suggests_unsafe_loading(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "digits_cnn.pt").write_bytes(b"PK\x03\x04 truncated")
    proc = autoprune("search", "--out", tmp_path / "run", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "cannot be read" in proc.stderr and "weights_only=False" not in proc.stdout + proc.stderr


# --- issue 29, point 4: refused before anything is created (no run directory, no training of the default) ----

ONE_STEP = "version: 1\nfinetune: {max_steps: 1}\n"
NO_LAYER = "version: 1\nlayers: ['nomatch*']\n"


@pytest.mark.parametrize("command, args, message", [
    ("search", ["--space", "compress"], "use --runtime onnxruntime"),
    ("search", ["--space", "tests/data/tiny_int8.yaml"], "use --runtime onnxruntime"),
    ("search", ["--device", "cuda"], "CUDA is not available"),
    ("search", ["--precision", "8-bit"], "precision (--precision) must be one of"),
    ("search", ["--precision", "bf16-mixed"], "mixed precision on a GPU"),
    ("search", ["--precision", "16-mixed"], "mixed precision on a GPU"),
    ("search", ["--fidelity", "on", "--space", "{one_step}"], "at least 2 steps"),
    ("search", ["--space", "{no_layer}"], "matches no"),
    ("search", ["--budget-ratio", "0.5", "--budget-ms", "3"], "give the latency budget once"),
    ("analyze", ["--device", "cuda"], "CUDA is not available"),
    ("analyze", ["--space", "{no_layer}"], "matches no"),
    ("analyze", ["--model", "nosuchmod:build", "--data", "nosuchmod:data"], "cannot import"),
])
def test_a_refusal_comes_before_any_file_is_written(command, args, message, tmp_path):
    (tmp_path / "one_step.yaml").write_text(ONE_STEP)
    (tmp_path / "no_layer.yaml").write_text(NO_LAYER)
    args = [a.format(one_step=tmp_path / "one_step.yaml", no_layer=tmp_path / "no_layer.yaml") for a in args]
    proc = autoprune_here(command, "--out", tmp_path / "run", *args,
                          *(["--no-progress"] if command == "search" else []))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.replace("\n", " ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists(), "nothing created: no run directory, no default model trained"


# --- issue 29, points 3 and 5: an int8 search's best/ and a failed int8 export, from the command line ----------

@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    proc = autoprune("search", "--space", "tests/data/tiny_int8.yaml", "--runtime", "onnxruntime", "--trials", "2",
                     "--seed", "0", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


def test_best_of_an_int8_search_holds_its_int8_model(int8_run):
    policy = json.loads((int8_run / "best" / "policy.json").read_text())
    assert policy["quantize"] == "int8_static" and (int8_run / "best" / "model.int8.onnx").is_file()


def test_an_export_whose_int8_check_fails_exits_2_naming_the_tolerance_and_leaves_nothing(int8_run, tmp_path):
    target = tmp_path / "exported"
    proc = autoprune("export", "--out", int8_run, "--to", target, "--int8-min-agreement", "1",
                     "--int8-max-error", "0.0001")
    assert proc.returncode == 2, proc.stderr
    assert "--int8-max-error" in proc.stderr.replace("\n", " ") and "unexpected error" not in proc.stderr
    assert not target.exists(), "no half-written export"
    proc = autoprune("export", "--out", int8_run, "--to", target)
    assert proc.returncode == 0, proc.stderr
    assert (target / "model.int8.onnx").is_file() and (target / "policy.json").is_file()


def test_the_recovery_reconstruction_and_bn_options_reach_the_search(tmp_path):
    out = tmp_path / "run"
    proc = autoprune("search", "--space", TINY, "--trials", "3", "--seed", "0", "--out", out, "--no-progress",
                     "--bn", "freeze", "--reconstruct", "--recover-steps", "4", "--recover-top", "1")
    assert proc.returncode == 0, proc.stderr
    rows = list(__import__("csv").DictReader((out / "trials.csv").open()))
    recovered = [r for r in rows if r["recovery_steps"] not in ("", "None")]
    assert len(recovered) == 1
    if recovered[0]["on_front"] == "True":
        parent = int(float(recovered[0]["parent"]))  # a column with empty cells reads as floats
        assert f"trial {recovered[0]['number']} recovered trial {parent}" in proc.stdout
    proc = autoprune("search", "--out", tmp_path / "x", "--bn", "sometimes", "--no-progress")
    assert proc.returncode == 2 and "bn (--bn) must be one of" in proc.stderr
    proc = autoprune("search", "--out", tmp_path / "y", "--recover-steps", "-3", "--no-progress")
    assert proc.returncode == 2 and "--recover-steps" in proc.stderr


def test_a_refine_whose_int8_check_fails_exits_2_and_leaves_no_half_written_candidate(int8_run, tmp_path):
    target = tmp_path / "refined"
    proc = autoprune("refine", "--out", int8_run, "--steps", "1", "--to", target, "--int8-min-agreement", "1",
                     "--int8-max-error", "0.0001")
    assert proc.returncode == 2, proc.stderr
    assert "--int8-max-error" in proc.stderr.replace("\n", " ") and "unexpected error" not in proc.stderr
    assert not target.exists() or not any(target.glob("trial_*/*")), "no half-written candidate"
