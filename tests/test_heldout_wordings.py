"""The three held-out wordings: shipped, complete, scored like VSM 2013, distinct, never tuned on."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from jaxalign.optimize.problem import tuning_wording
from jaxalign.survey.paraphrase import HELDOUT_WORDING, HELDOUT_WORDINGS, heldout_vsm13, heldout_wording
from jaxalign.survey.vsm13 import BUILTIN_WORDING, load_wording, vsm13

TUNING = Path(__file__).resolve().parents[1] / "benchmarks" / "wordings"
IDS = tuple(str(k) for k in range(1, 25))


def _texts(instrument) -> dict[str, str]:
    return {item.id: item.text.strip().lower() for item in instrument.items}


def _data_file(name: str) -> Path:
    return Path(str(resources.files("jaxalign.survey").joinpath("data").joinpath(
        name.replace("jaxalign-heldout-", "heldout_") + ".json")))


def test_the_three_held_out_wordings_are_named():
    assert HELDOUT_WORDINGS == ("jaxalign-heldout-v1", "jaxalign-heldout-v2", "jaxalign-heldout-v3")
    assert HELDOUT_WORDINGS[0] == HELDOUT_WORDING


@pytest.mark.parametrize("name", HELDOUT_WORDINGS)
def test_each_held_out_wording_loads_as_vsm13(name):
    base = vsm13()
    held = heldout_wording(name)
    assert held.wording == name
    assert held.item_ids == IDS and held.n_items == 24
    assert all(len(item.options) == 5 for item in held.items)
    assert all(item.text.strip() and all(o.strip() for o in item.options) for item in held.items)
    np.testing.assert_array_equal(held.weights, base.weights)      # same formulas
    np.testing.assert_array_equal(held.constants, base.constants)
    assert held.dimensions == base.dimensions
    assert heldout_wording(name, constants={"IDV": 7.0}).constants[1] == 7.0
    anchored = base.with_constants({"PDI": 3.0})
    assert heldout_wording(name, base=anchored).constants[0] == 3.0


@pytest.mark.parametrize("name", HELDOUT_WORDINGS[1:])
def test_the_packaged_files_are_in_the_wording_file_format(name):
    file = _data_file(name)
    assert json.loads(file.read_text(encoding="utf-8"))["name"] == name
    loaded = load_wording(file)  # the user-facing reader accepts it as it is
    assert loaded.wording == f"user:{name}"
    assert [i.text for i in loaded.items] == [i.text for i in heldout_wording(name).items]


def test_v1_is_heldout_vsm13():
    assert heldout_wording(HELDOUT_WORDING).items == heldout_vsm13().items


@pytest.mark.parametrize("name", HELDOUT_WORDINGS[1:])
def test_directions_are_kept(name):
    """Spot checks of the answer direction: first label = the 'most' end, item 20 reversed."""
    by_id = {item.id: item.options for item in heldout_wording(name).items}
    for k in ("15", "16", "17"):
        assert "never" in by_id[k][4] or "no time" in by_id[k][4]
    assert "never" in by_id["20"][0] or "no time" in by_id["20"][0]      # 1 = never
    assert "always" in by_id["20"][4] or "all times" in by_id["20"][4]   # 5 = always
    for k in ("21", "22", "23", "24"):
        assert by_id[k][0].startswith("agree") and by_id[k][4].startswith("disagree")
    assert "not" in by_id["19"][4] or "no " in by_id["19"][4]
    for k in map(str, range(1, 15)):
        assert by_id[k] == by_id["1"]  # one importance scale for items 1-14


def test_no_item_repeats_another_wording():
    others = {
        BUILTIN_WORDING: vsm13(),
        "tune_a": load_wording(TUNING / "tune_a.json"),
        "tune_b": load_wording(TUNING / "tune_b.json"),
    }
    held = {name: heldout_wording(name) for name in HELDOUT_WORDINGS}
    for name, instrument in held.items():
        mine = _texts(instrument)
        assert len(set(mine.values())) == 24, f"{name}: two items share a text"
        for other, other_instrument in {**others, **held}.items():
            if other == name:
                continue
            theirs = _texts(other_instrument)
            same = [k for k in IDS if mine[k] == theirs[k]]
            assert not same, f"{name} repeats {other} at items {same}"


@pytest.mark.parametrize("name", HELDOUT_WORDINGS)
def test_tuning_refuses_a_held_out_wording_by_name(name):
    with pytest.raises(ValueError, match="is a held-out wording"):
        tuning_wording(name, vsm13())


@pytest.mark.parametrize("name", HELDOUT_WORDINGS[1:])
def test_tuning_refuses_the_packaged_file_and_a_renamed_copy(name, tmp_path):
    with pytest.raises(ValueError, match=f"repeats the project's held-out wording '{name}'"):
        tuning_wording(str(_data_file(name)), vsm13())
    copy = tmp_path / "mine.json"
    shutil.copyfile(_data_file(name), copy)
    data = json.loads(copy.read_text(encoding="utf-8"))
    data["name"] = "my-own-wording"
    data["items"] = data["items"][::-1]  # order does not matter either
    copy.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=f"repeats the project's held-out wording '{name}'"):
        tuning_wording(str(copy), vsm13())


def test_tuning_still_accepts_the_tuning_wordings():
    for file in ("tune_a.json", "tune_b.json"):
        assert tuning_wording(str(TUNING / file), vsm13()).wording.startswith("user:jaxalign-tune-")


def test_unknown_held_out_wording_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown held-out wording 'jaxalign-heldout-v9'") as error:
        heldout_wording("jaxalign-heldout-v9")
    assert all(repr(name) in str(error.value) for name in HELDOUT_WORDINGS)
