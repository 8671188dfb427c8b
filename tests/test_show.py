"""`jaxalign show RUN`: a run's summary and figures; the figures never switch matplotlib's backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxalign.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "china"
    code = main(["align", "--country", "China", "--generations", "2", "--population", "4",
                 "--k", "2", "--subspace", "4", "--out", str(out), "--no-progress",
                 "--log", "tensorboard"])
    assert code == 0
    return out


@pytest.mark.slow
def test_results_keep_each_baselines_answers(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    for name in ("naive", "persona", "icl"):
        answers = np.asarray(results["methods"][name]["answers"])
        assert answers.shape == (24, 5)
        np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_show_prints_the_summary_and_writes_the_figures(run_dir, capsys):
    for name in ("loss.png", "answers.png"):
        (run_dir / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    results = json.loads((run_dir / "results.json").read_text())
    assert "finished, 2 of 2 generations" in out
    aligned = next(line for line in out.splitlines() if line.startswith("aligned"))
    assert aligned.split()[-1] == f"{results['methods']['optimized']['loss']:.1f}"
    for name in ("dims.png", "loss.png", "answers.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG


@pytest.mark.slow
def test_show_json_is_one_document(run_dir, capsys):
    capsys.readouterr()
    assert main(["show", str(run_dir), "--json", "--no-figures"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["target"] == "China" and payload["generations_done"] == 2
    assert payload["figures"] == [] and set(payload["methods"]) >= {"naive", "optimized"}


def test_show_errors_name_the_problem(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert main(["show", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no results.json" in err and "--resume" in err


@pytest.mark.slow
def test_figures_leave_the_backend_alone(run_dir):
    import matplotlib

    from jaxalign import plots

    before = matplotlib.get_backend()
    run = json.loads((run_dir / "results.json").read_text())
    fig = plots.answers_figure(run)
    assert len(fig.axes[0].patches) == 24 * 5 * 2  # plain and aligned, five answers per item
    assert matplotlib.get_backend() == before


@pytest.mark.slow
def test_score_labels_its_row(run_dir, capsys):
    capsys.readouterr()
    assert main(["score", "--soft-prompt", str(run_dir / "soft_prompt.safetensors")]) == 0
    rows = [line.split()[0:2] for line in capsys.readouterr().out.splitlines()]
    assert ["soft", "prompt"] in rows


def _scalars(folder):
    """(tag, step) -> value from TensorBoard event files (TFRecord framing, Event protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    values = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                values[(value.tag, event.step)] = value.simple_value
    return values


@pytest.mark.slow
def test_log_tensorboard_streams_each_generations_losses_and_dims(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    values = _scalars(run_dir / "logs")
    best = results["history"]["best_loss"]
    mean = results["history"]["mean_loss"]
    for g in range(len(best)):
        assert values[("China/best_loss", g)] == pytest.approx(best[g], rel=1e-6)
        assert values[("China/mean_loss", g)] == pytest.approx(mean[g], rel=1e-6)
    last = len(best) - 1
    assert {tag for tag, step in values if step == last and "/dims/" in tag} == {
        f"China/dims/{d}" for d in ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR")}


def test_log_needs_an_out_folder():
    import jaxalign

    lm = jaxalign.load_model("tiny-random")
    with pytest.raises(ValueError, match="needs out="):
        jaxalign.align(lm, "China", generations=1, population=4, log="tensorboard", progress=False)
