"""Many targets in one compiled run: each equals its single run, resume covers the set, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.cli import main, select_all_countries
from jaxalign.optimize.pipeline import target_key

# Saudi Arabia has only LTO and IVR: its missing dimensions are masked
TARGETS = ("China", "India", "Saudi Arabia")
CONFIG = api.AlignConfig(k=2, population=8, subspace=8, generations=3, seed=2, baselines=("naive",),
                         chunk_size=2)


@pytest.fixture(scope="module")
def batched(lm):
    return jaxalign.align(lm, list(TARGETS), config=CONFIG, progress=False)


@pytest.mark.slow
def test_each_target_equals_its_single_run(lm, batched):
    assert isinstance(batched, api.AlignResults) and len(batched) == 3
    assert [r.target.name for r in batched] == list(TARGETS)
    for name in TARGETS:
        single = jaxalign.align(lm, name, config=CONFIG, progress=False)
        together = batched[name]
        np.testing.assert_allclose(together.soft_prompt, single.soft_prompt, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(together.history["best_loss"], single.history["best_loss"], rtol=1e-4)
        np.testing.assert_allclose(together.dims, single.dims, rtol=1e-4, atol=1e-3)
        assert together.loss == pytest.approx(single.loss, rel=1e-4)
        assert together.baselines["naive"].loss == pytest.approx(single.baselines["naive"].loss, rel=1e-5)
        assert together.evaluations == single.evaluations == 8 * 4
    saudi = batched["Saudi Arabia"]
    available = ~np.isnan(saudi.target.values)
    assert available.sum() == 2  # loss over LTO and IVR only
    expected = np.mean(np.abs(saudi.dims[available] - saudi.target.values[available]))
    assert saudi.loss == pytest.approx(float(expected), rel=1e-5)


def test_targets_draw_their_own_keys():
    china, india = jaxalign.hofstede("China"), jaxalign.hofstede("India")
    assert not np.array_equal(np.asarray(target_key(0, china)), np.asarray(target_key(0, india)))
    assert np.array_equal(np.asarray(target_key(0, china)), np.asarray(target_key(0, china)))
    assert not np.array_equal(np.asarray(target_key(0, china)), np.asarray(target_key(1, china)))


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_and_resumed_set_equals_uninterrupted(lm, batched, tmp_path, monkeypatch):
    config = dataclasses.replace(CONFIG, checkpoint_every=2)
    real_update = api.RunProgress.update

    def update_then_die(self, done, best):
        real_update(self, done, best)
        if done >= 2:
            raise _Killed  # as if killed right after the checkpoint at generation 2

    monkeypatch.setattr(api.RunProgress, "update", update_then_die)
    with pytest.raises(_Killed):
        jaxalign.align(lm, list(TARGETS), config=config, out=tmp_path / "run", progress=True)
    monkeypatch.setattr(api.RunProgress, "update", real_update)
    with pytest.raises(ValueError, match="targets"):  # another set of targets is refused
        jaxalign.align(lm, ["China", "India"], config=config, out=tmp_path / "run", resume=True,
                       progress=False)
    resumed = jaxalign.align(lm, list(TARGETS), config=config, out=tmp_path / "run", resume=True,
                             progress=False)
    for whole, cut in zip(batched, resumed):
        assert cut.resumed_from == 2
        np.testing.assert_array_equal(cut.soft_prompt, whole.soft_prompt)
        assert cut.loss == whole.loss and cut.history["best_loss"] == whole.history["best_loss"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_targets"] == 3 and [row["target"] for row in summary["targets"]] == list(TARGETS)
    for row, result in zip(summary["targets"], batched):
        assert row["loss"]["aligned"] == pytest.approx(result.loss)
    folder = tmp_path / "run" / "Saudi_Arabia"
    assert json.loads((folder / "results.json").read_text())["target"]["dims"]["PDI"] is None
    assert (tmp_path / "run" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "| **mean** |" in (tmp_path / "run" / "summary.md").read_text()


def test_bad_target_lists(lm):
    with pytest.raises(ValueError, match="empty"):
        jaxalign.align(lm, [], progress=False)
    with pytest.raises(ValueError, match="repeated: China"):
        jaxalign.align(lm, ["China", "CHI"], progress=False, **dataclasses.asdict(CONFIG))
    with pytest.raises(ValueError, match="Atlantis"):
        jaxalign.align(lm, ["China", "Atlantis"], progress=False)


def test_all_countries_selection():
    complete = select_all_countries(6)
    assert len(complete) == 65 and all(t.mask.all() for t in complete)
    two = select_all_countries(2)
    assert len(two) > 65 and all(t.mask.sum() >= 2 for t in two)
    assert "Saudi Arabia" in {t.name for t in two} and "Saudi Arabia" not in {t.name for t in complete}


@pytest.mark.slow
def test_cli_country_all_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "all"
    code = main(["align", "--country", "all", "--generations", "1", "--population", "4", "--k", "1",
                 "--subspace", "4", "--baselines", "naive", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_targets"] == 65
    folders = [p for p in out.iterdir() if p.is_dir() and p.name != "checkpoints"]
    assert len(folders) == 65 and all((p / "results.json").exists() for p in folders)
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed and "65 targets" in printed


def test_cli_country_list_errors(tmp_path, capsys):
    assert main(["align", "--country", "China,Atlantis", "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "Atlantis" in capsys.readouterr().err
    assert main(["align", "--country", "China", "--min-dims", "2", "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 2
    assert "--min-dims only applies" in capsys.readouterr().err
