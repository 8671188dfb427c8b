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
                 "--k", "2", "--subspace", "4", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_results_keep_each_baselines_answers(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    for name in ("naive", "persona", "icl"):
        answers = np.asarray(results["methods"][name]["answers"])
        assert answers.shape == (24, 5)
        np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)


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


def test_figures_leave_the_backend_alone(run_dir):
    import matplotlib

    from jaxalign import plots

    before = matplotlib.get_backend()
    run = json.loads((run_dir / "results.json").read_text())
    fig = plots.answers_figure(run)
    assert len(fig.axes[0].patches) == 24 * 5 * 2  # plain and aligned, five answers per item
    assert matplotlib.get_backend() == before


def test_score_labels_its_row(run_dir, capsys):
    capsys.readouterr()
    assert main(["score", "--soft-prompt", str(run_dir / "soft_prompt.safetensors")]) == 0
    rows = [line.split()[0:2] for line in capsys.readouterr().out.splitlines()]
    assert ["soft", "prompt"] in rows
