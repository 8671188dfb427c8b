"""Country targets: the shipped Hofstede release, lookups, custom targets."""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np
import pytest

from jaxalign.survey import (
    DIMENSIONS,
    HOFSTEDE_CITATION,
    HOFSTEDE_RELEASE,
    Target,
    countries,
    custom_target,
    hofstede,
    resolve_target,
)


@pytest.fixture(scope="module")
def all_targets():
    return countries()


def test_every_row_loads(all_targets):
    assert len(all_targets) == 111
    codes = [t.code for t in all_targets]
    assert len(set(codes)) == 111 and all(len(c) == 3 for c in codes)
    for target in all_targets:
        assert target.values.shape == (6,) and target.values.dtype == np.float32
        assert target.dimensions == DIMENSIONS
        assert target.mask.any()
        assert not target.values.flags.writeable


def test_missing_values_are_nan_with_published_counts(all_targets):
    values = np.stack([t.values for t in all_targets])  # (111, 6)
    present = (~np.isnan(values)).sum(axis=0)
    # PDI, IDV, MAS, UAI: 78 rows each; LTO 96; IVR 97; all six: 65 (data/SOURCE.md)
    np.testing.assert_array_equal(present, [78, 78, 78, 78, 96, 97])
    assert int((~np.isnan(values)).all(axis=1).sum()) == 65
    # the raw file agrees cell by cell: '#NULL!' <-> NaN, else the integer
    path = resources.files("jaxalign.survey").joinpath("data", "hofstede_6d_2015-08-16.csv")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    for row, target in zip(rows, all_targets):
        assert row[0] == target.code and row[1] == target.name
        for cell, value in zip(row[2:], target.values):
            assert np.isnan(value) if cell == "#NULL!" else value == int(cell)


def test_known_rows():
    saudi = hofstede("Saudi Arabia")
    assert saudi.code == "SAU"
    np.testing.assert_array_equal(saudi.mask, [False, False, False, False, True, True])
    assert saudi.available == ("LTO", "IVR")
    np.testing.assert_array_equal(saudi.values[4:], [36, 52])
    np.testing.assert_array_equal(hofstede("Arab countries").values, [80, 38, 53, 68, 23, 34])
    np.testing.assert_array_equal(hofstede("USA").values, [40, 91, 62, 46, 26, 68])
    np.testing.assert_array_equal(hofstede("China").values, [80, 20, 66, 30, 87, 24])
    np.testing.assert_array_equal(hofstede("India").values, [77, 48, 56, 40, 51, 26])
    assert hofstede("Greece").values[3] == 112  # not capped at 100
    assert saudi.as_dict() == {"PDI": None, "IDV": None, "MAS": None, "UAI": None, "LTO": 36.0, "IVR": 52.0}


@pytest.mark.parametrize(
    "query, code",
    [
        ("usa", "USA"), ("U.S.A.", "USA"), ("US", "USA"), ("United States", "USA"),
        ("the United States of America", "USA"), ("america", "USA"),
        ("UK", "GBR"), ("Britain", "GBR"), ("great britain", "GBR"), ("United Kingdom", "GBR"),
        ("England", "GBR"), ("GBR", "GBR"),
        ("South Korea", "KOR"), ("Korea", "KOR"), ("korea south", "KOR"),
        ("Arab World", "ARA"), ("arab countries", "ARA"), ("ARA", "ARA"),
        ("Czechia", "CZE"), ("Czech Rep", "CZE"), ("czech republic", "CZE"),
        ("Russia", "RUS"), ("Russian Federation", "RUS"),
        ("CHI", "CHI"), ("chi", "CHI"), ("  CHINA ", "CHI"),
        ("Germany", "GER"), ("ger", "GER"), ("Netherlands", "NET"), ("the Netherlands", "NET"),
        ("Slovakia", "SLK"), ("Trinidad & Tobago", "TRI"), ("Saudi Arabia", "SAU"),
    ],
)
def test_lookup_by_name_alias_or_code(query, code):
    assert hofstede(query).code == code


def test_unknown_country_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown country 'Chinaa'.*China \(CHI\)"):
        hofstede("Chinaa")
    with pytest.raises(ValueError, match=r"Germany \(GER\)"):
        hofstede("Germny")
    with pytest.raises(ValueError, match="no close match"):
        hofstede("Atlantis-on-Sea-XYZ")
    with pytest.raises(ValueError, match="required"):
        hofstede("   ")


def test_source_and_citation():
    assert HOFSTEDE_RELEASE == "2015-08-16"
    assert "Hofstede, G., Hofstede, G. J., & Minkov, M. (2010)" in HOFSTEDE_CITATION
    assert "3rd ed." in HOFSTEDE_CITATION
    source = hofstede("Japan").source
    assert "2015-08-16" in source and "Minkov" in source and "Cultures and Organizations" in source


def test_countries_filter():
    names = {t.code for t in countries("germany")}
    assert names == {"GER", "GEE"}
    assert {t.code for t in countries("SWI")} == {"SWI", "SWF", "SWG"}  # names contain 'swi'
    assert [t.name for t in countries("JPN")] == ["Japan"]  # by code
    assert "GBR" in {t.code for t in countries("uk")}  # alias, plus 'Ukraine' by substring
    assert "UKR" in {t.code for t in countries("uk")}
    assert countries("zzzz") == []
    assert len(countries("")) == 111


def test_custom_target():
    target = custom_target({"PDI": 80, "idv": 20.5})
    assert target.name == "custom" and target.code is None
    np.testing.assert_array_equal(target.mask, [True, True, False, False, False, False])
    np.testing.assert_array_equal(target.values[:2], [80, 20.5])
    same = custom_target("pdi=80, IDV = 20.5", name="mine")
    assert same.name == "mine"
    np.testing.assert_array_equal(same.values, target.values)
    assert custom_target("LTOWVS=40").available == ("LTO",)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "empty target"),
        ("", "empty target"),
        (" , ", "empty target"),
        ({"XYZ": 3}, "unknown dimension 'XYZ'"),
        ("PDI=80,FOO=1", "unknown dimension 'FOO'"),
        ("PDI=high", "score for PDI must be a number, got 'high'"),
        ({"PDI": None}, "must be a number"),
        ({"PDI": True}, "must be a number"),
        ({"PDI": float("nan")}, "must be finite"),
        ("PDI=80,pdi=70", "given twice"),
        ("PDI80", "expected DIM=value"),
        (42, "mapping"),
    ],
)
def test_custom_target_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        custom_target(spec)


def test_target_validation():
    with pytest.raises(ValueError, match="no usable dimension"):
        Target("empty", None, np.full(6, np.nan))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        Target("short", None, np.zeros(5))


def test_resolve_target():
    assert resolve_target("China").code == "CHI"
    assert resolve_target("PDI=10,IVR=90").available == ("PDI", "IVR")
    target = hofstede("India")
    assert resolve_target(target) is target
    assert resolve_target({"MAS": 1}).available == ("MAS",)
    with pytest.raises(ValueError, match="closest matches"):
        resolve_target("Indai")


# ---------------------------------------------------------------------------- plausible values
def test_published_range_is_the_shipped_files_extremes():
    """0..112 read straight from the shipped CSV (Greece's UAI 112; LTO and IVR reach 0)."""
    from jaxalign.survey.targets import HOFSTEDE_DATA_FILE, published_range

    text = resources.files("jaxalign.survey").joinpath("data", HOFSTEDE_DATA_FILE).read_text("utf-8")
    values = [float(row[c]) for row in csv.DictReader(text.splitlines())
              for c in ("pdi", "idv", "mas", "uai", "ltowvs", "ivr") if row[c] != "#NULL!"]
    assert published_range() == (min(values), max(values)) == (0.0, 112.0)


def test_reachable_range_of_vsm13_by_hand():
    """The VSM 2013 manual's formulas, each item mean in 1..5: PDI = 35(m7 - m2) + 25(m20 - m23)
    spans 35*4 + 25*4 = 240 either side of C; IDV, MAS 2*35*4 = 280; UAI, LTO 40*4 + 25*4 = 260;
    IVR 35*4 + 40*4 = 300. The extremes are indices the instrument really gives."""
    import jaxalign
    from jaxalign.survey.targets import reachable_range

    instrument = jaxalign.vsm13()
    bounds = reachable_range(instrument)  # (6, 2)
    half = np.array([240, 280, 280, 260, 260, 300], np.float64)
    np.testing.assert_array_equal(bounds, np.stack([-half, half], axis=1))
    weights = np.asarray(instrument.weights)  # (6, 24)
    for d in range(6):  # the answers at the box's corner give the bound exactly
        means = np.where(weights[d] > 0, 5.0, 1.0)[None]  # (1, 24)
        assert float(np.asarray(instrument.indices(means))[0, d]) == pytest.approx(half[d])
    shifted = reachable_range(jaxalign.vsm13(constants={"PDI": 10.0}))
    np.testing.assert_array_equal(shifted[0], [-230.0, 250.0])


def test_unreachable_target_is_refused_reachable_one_kept():
    import jaxalign
    from jaxalign.survey.targets import check_reachable, outside_published

    instrument = jaxalign.vsm13()
    with pytest.raises(ValueError, match=r"PDI=800 \(reachable: -240\.\.240\).*0\.\.112"):
        check_reachable(custom_target("PDI=800,IDV=20"), instrument)
    with pytest.raises(ValueError, match=r"IVR=-301"):
        check_reachable(custom_target("IVR=-301"), instrument)
    check_reachable(custom_target("PDI=240,IVR=-300"), instrument)  # the edges are reachable
    check_reachable(hofstede("Greece"), instrument)
    assert outside_published(custom_target("PDI=150,IDV=20,MAS=-1")) == ["PDI=150", "MAS=-1"]
    assert outside_published(hofstede("Greece")) == []


def test_cli_target_outside_the_published_scores_warns_once(capsys):
    from jaxalign.cli import CommandError, target_argument

    assert target_argument("PDI=150,IDV=20").values[0] == 150
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("jaxalign: warning: PDI=150 lies outside")
    assert "IDV" not in err[0] and "0..112" in err[0]
    target_argument("PDI=80,IDV=20")
    target_argument("Greece")
    assert capsys.readouterr().err == ""
    with pytest.raises(CommandError, match="PDI=800"):
        target_argument("PDI=800")
