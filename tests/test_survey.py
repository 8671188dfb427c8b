"""Instrument, VSM 2013 scoring and wording files, constants and anchoring, losses."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.survey import (
    DIMENSIONS,
    Instrument,
    Item,
    anchor_constants,
    custom_target,
    hofstede,
    kendall_tau,
    l1_loss,
    load_wording,
    save_wording,
    vsm13,
)

OPTIONS = ("a", "b", "c", "d", "e")

# The manual's formulas, written out again as (dimension, first item, second item, weight)
# per term, independently of the package's table.
TERMS = [
    ("PDI", 7, 2, 35), ("PDI", 20, 23, 25),
    ("IDV", 4, 1, 35), ("IDV", 9, 6, 35),
    ("MAS", 5, 3, 35), ("MAS", 8, 10, 35),
    ("UAI", 18, 15, 40), ("UAI", 21, 24, 25),
    ("LTO", 13, 14, 40), ("LTO", 19, 22, 25),
    ("IVR", 12, 11, 35), ("IVR", 17, 16, 40),
]


@pytest.fixture(scope="module")
def vsm():
    return vsm13()


def means_from(values: dict[int, float], default: float = 3.0) -> np.ndarray:
    """A (24,) vector from {item number: mean}."""
    means = np.full(24, default, dtype=np.float32)
    for item, value in values.items():
        means[item - 1] = value
    return means


# ------------------------------------------------------------------------------ VSM 2013
def test_vsm13_shape_and_names(vsm):
    assert vsm.dimensions == ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR") == DIMENSIONS
    assert vsm.item_ids == tuple(str(k) for k in range(1, 25))
    assert vsm.n_items == 24 and vsm.n_options == 5 and vsm.n_dimensions == 6
    assert vsm.weights.shape == (6, 24) and vsm.constants.shape == (6,)
    np.testing.assert_array_equal(vsm.constants, 0.0)
    assert vsm.wording == "jaxalign-v1"
    assert all(len(item.options) == 5 for item in vsm.items)


def test_all_means_three_and_c50_gives_50(vsm):
    indices = vsm.indices(np.full(24, 3.0), constants=np.full(6, 50.0))
    np.testing.assert_allclose(indices, np.full(6, 50.0), atol=1e-5)


def test_items_7_and_20_at_five_gives_pdi_240(vsm):
    indices = np.asarray(vsm.indices(means_from({7: 5.0, 20: 5.0}, default=1.0)))
    np.testing.assert_allclose(indices, [240, 0, 0, 0, 0, 0], atol=1e-4)


def test_fractional_means_hand_computed(vsm):
    means = means_from({
        7: 3.5, 2: 2.25, 20: 4.1, 23: 1.6,   # PDI = 35*1.25 + 25*2.5 = 43.75 + 62.5 = 106.25
        4: 2.4, 1: 1.8, 9: 3.2, 6: 2.0,      # IDV = 35*0.6 + 35*1.2 = 21 + 42 = 63
        5: 2.6, 3: 2.1, 8: 3.0, 10: 3.4,     # MAS = 35*0.5 + 35*(-0.4) = 17.5 - 14 = 3.5
        18: 2.2, 15: 3.1, 21: 2.5, 24: 3.3,  # UAI = 40*(-0.9) + 25*(-0.8) = -36 - 20 = -56
        13: 1.9, 14: 2.4, 19: 1.5, 22: 1.7,  # LTO = 40*(-0.5) + 25*(-0.2) = -20 - 5 = -25
        12: 2.8, 11: 2.0, 17: 3.6, 16: 2.1,  # IVR = 35*0.8 + 40*1.5 = 28 + 60 = 88
    })
    expected = np.array([106.25, 63.0, 3.5, -56.0, -25.0, 88.0])
    np.testing.assert_allclose(vsm.indices(means), expected, atol=1e-3)
    # constants are added per dimension
    constants = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    np.testing.assert_allclose(vsm.indices(means, constants=constants), expected + constants, atol=1e-3)


def test_mas_weights_are_35_on_both_terms(vsm):
    mas = vsm.weights[DIMENSIONS.index("MAS")]
    assert mas[5 - 1] == 35 and mas[3 - 1] == -35
    assert mas[8 - 1] == 35 and mas[10 - 1] == -35
    assert np.count_nonzero(mas) == 4
    # one unit on the second term moves MAS by 35, not 25
    delta = vsm.indices(means_from({8: 4.0})) - vsm.indices(means_from({}))
    assert float(delta[2]) == pytest.approx(35.0)


@pytest.mark.parametrize("dim, first, second, weight", TERMS)
def test_swapping_a_terms_items_flips_its_sign(vsm, dim, first, second, weight):
    rng = np.random.default_rng(first * 100 + second)
    means = rng.uniform(1, 5, size=24).astype(np.float32)
    swapped = means.copy()
    swapped[[first - 1, second - 1]] = means[[second - 1, first - 1]]
    term = weight * (float(means[first - 1]) - float(means[second - 1]))
    before = np.asarray(vsm.indices(means))
    after = np.asarray(vsm.indices(swapped))
    expected = before.copy()
    expected[DIMENSIONS.index(dim)] -= 2 * term  # +term becomes -term
    np.testing.assert_allclose(after, expected, atol=1e-3)


def test_every_item_used_once(vsm):
    assert np.all(np.count_nonzero(vsm.weights, axis=0) == 1)
    for dim, first, second, weight in TERMS:
        d = DIMENSIONS.index(dim)
        assert vsm.weights[d, first - 1] == weight and vsm.weights[d, second - 1] == -weight


def test_own_wording_scales_and_directions(vsm):
    items = {item.id: item for item in vsm.items}
    assert items["20"].options[0] == "never" and items["20"].options[-1] == "always"
    assert items["15"].options[0] == "always" and items["15"].options[-1] == "never"
    assert items["16"].options[0] == "always" and items["16"].options[-1] == "never"
    for k in range(1, 15):
        assert "important" in items[str(k)].options[0]
    for k in range(21, 25):
        assert items[str(k)].options[0] == "strongly agree"
        assert items[str(k)].options[-1] == "strongly disagree"
    assert items["18"].options[0] == "very good"
    assert items["19"].options[-1] == "not proud at all"
    # self-contained: the context of items 1-10 and 11-14 is in every item's text
    for k in range(1, 11):
        assert "job" in items[str(k)].text
    for k in range(11, 15):
        assert "private life" in items[str(k)].text
    # every text distinct, and not the copyrighted questionnaire's opening sentence
    assert len({item.text for item in vsm.items}) == 24
    assert not any("disregarding your present job" in item.text for item in vsm.items)


# ------------------------------------------------------------------------------ jax transforms
def test_indices_batch_jit_vmap_grad(vsm):
    means = jax.random.uniform(jax.random.key(0), (2, 3, 24), minval=1, maxval=5)
    batched = vsm.indices(means)
    assert batched.shape == (2, 3, 6)
    np.testing.assert_allclose(jax.jit(vsm.indices)(means), batched, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(jax.vmap(jax.vmap(vsm.indices))(means), batched, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(batched[1, 2], vsm.indices(means[1, 2]), rtol=1e-6, atol=1e-4)
    # d PDI / d means is the PDI row of the weights
    grad = jax.grad(lambda m: vsm.indices(m)[0])(jnp.full(24, 3.0))
    np.testing.assert_allclose(grad, vsm.weights[0])
    # constants may be traced too
    grad_c = jax.grad(lambda c: vsm.indices(jnp.full(24, 3.0), constants=c).sum())(jnp.zeros(6))
    np.testing.assert_allclose(grad_c, np.ones(6))
    # integer answers are accepted (cast to float)
    ints = np.full(24, 3, dtype=np.int32)
    assert jnp.issubdtype(vsm.indices(ints).dtype, jnp.floating)


# ------------------------------------------------------------------------------ constants
def test_constants_mapping_array_and_copy(vsm):
    means = np.full(24, 3.0)
    np.testing.assert_allclose(vsm.indices(means, constants={"ivr": 50, "PDI": -1}), [-1, 0, 0, 0, 0, 50])
    shifted = vsm.with_constants({"MAS": 10})
    np.testing.assert_allclose(shifted.constants, [0, 0, 10, 0, 0, 0])
    np.testing.assert_array_equal(vsm.constants, 0.0)  # original untouched
    np.testing.assert_allclose(shifted.indices(means), [0, 0, 10, 0, 0, 0])
    # a mapping keeps the instrument's other constants
    np.testing.assert_allclose(shifted.indices(means, constants={"PDI": 5}), [5, 0, 10, 0, 0, 0])
    np.testing.assert_allclose(vsm13(constants=np.arange(6.0)).constants, np.arange(6.0))
    with pytest.raises(ValueError, match="unknown dimension 'XYZ'"):
        vsm.with_constants({"XYZ": 1})
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        vsm.indices(means, constants=np.zeros(5))
    with pytest.raises(ValueError, match="must be a number"):
        vsm.with_constants({"PDI": "high"})
    with pytest.raises(ValueError):
        vsm.constants[0] = 1.0  # read-only


def test_anchor_constants_round_trip(vsm):
    rng = np.random.default_rng(3)
    reference = rng.uniform(1, 5, size=24)
    china = hofstede("China")
    constants = anchor_constants(vsm, reference, china)
    assert constants.shape == (6,)
    np.testing.assert_allclose(vsm.indices(reference.astype(np.float32), constants=constants), china.values, atol=1e-3)
    # another sample on the anchored scale differs by exactly its C = 0 difference
    other = rng.uniform(1, 5, size=24)
    shift = np.asarray(vsm.indices(other) - vsm.indices(reference))
    np.testing.assert_allclose(vsm.with_constants(constants).indices(other), china.values + shift, atol=1e-3)


def test_anchor_keeps_constants_of_missing_dimensions(vsm):
    base = vsm.with_constants(np.full(6, 7.0))
    reference = np.full(24, 2.0)
    reference[[12, 16]] = [4.0, 3.0]  # items 13 and 17 -> LTO = 80, IVR = 40 before C
    saudi = hofstede("Saudi Arabia")  # only LTO 36 and IVR 52
    constants = anchor_constants(base, reference, saudi)
    np.testing.assert_allclose(constants, [7, 7, 7, 7, 36 - 80, 52 - 40])
    np.testing.assert_allclose(anchor_constants(base, reference, {"ivr": 52}), [7, 7, 7, 7, 7, 12])
    with pytest.raises(ValueError, match="unknown dimension"):
        anchor_constants(base, reference, {"PID": 3})
    with pytest.raises(ValueError, match=r"shape \(24,\)"):
        anchor_constants(base, np.ones(23), saudi)
    with pytest.raises(ValueError, match="no available dimension"):
        anchor_constants(base, reference, {"PDI": float("nan")})


# ------------------------------------------------------------------------------ general instrument
def test_user_instrument_from_formulas():
    items = [Item("a", "Q a?", OPTIONS), Item("b", "Q b?", OPTIONS), Item("c", "Q c?", OPTIONS)]
    inst = Instrument.from_formulas(
        "mini", "mine", items, {"X": {"a": 10, "c": -5}, "Y": {"b": 2}}, constants={"Y": 1}
    )
    assert inst.dimensions == ("X", "Y") and inst.item_ids == ("a", "b", "c")
    # X = 10*3 - 5*2 = 20; Y = 2*1 + 1 = 3
    np.testing.assert_allclose(inst.indices(np.array([3.0, 1.0, 2.0])), [20.0, 3.0])
    assert inst.formula("x") == "X = 10*ma - 5*mc + C (0)"


def test_instrument_validation():
    with pytest.raises(ValueError, match="expected 5 option labels, got 4"):
        Item("1", "text", ("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="option 3 must be a non-empty string"):
        Item("1", "text", ("a", "b", "", "d", "e"))
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        Item("1", " ", OPTIONS)
    items = [Item("a", "A?", OPTIONS), Item("a", "B?", OPTIONS)]
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        Instrument.from_formulas("dup", "w", items, {"X": {"a": 1}})
    items = [Item("a", "A?", OPTIONS), Item("b", "B?", OPTIONS)]
    with pytest.raises(ValueError, match="unknown item 'z'"):
        Instrument.from_formulas("bad", "w", items, {"X": {"a": 1, "z": 2}})
    with pytest.raises(ValueError, match="no terms"):
        Instrument.from_formulas("bad", "w", items, {"X": {}})
    with pytest.raises(ValueError, match=r"weights must have shape \(1, 2\)"):
        Instrument("bad", "w", tuple(items), ("X",), np.ones((1, 3)), np.zeros(1))
    vsm = vsm13()
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 24\)"):
        vsm.indices(np.ones((4, 23)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 24\)"):
        vsm.indices(3.0)


# ------------------------------------------------------------------------------ wording files
def write_wording(path, items, name="test-wording"):
    payload = {"name": name, "items": items}
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def full_entries():
    return [
        {"id": str(k), "text": f"Question number {k}?", "options": [f"o{k}{j}" for j in range(1, 6)]}
        for k in range(1, 25)
    ]


def test_load_wording_valid_file(tmp_path):
    entries = full_entries()[::-1]  # any order; ids may be integers
    entries[0]["id"] = 24
    path = write_wording(tmp_path / "official.json", entries)
    inst = vsm13(wording=path)
    assert inst.wording == "user:test-wording"
    assert inst.item_ids == tuple(str(k) for k in range(1, 25))  # put back in instrument order
    assert inst.items[6].text == "Question number 7?"
    assert inst.items[19].options == ("o201", "o202", "o203", "o204", "o205")
    np.testing.assert_array_equal(inst.weights, vsm13().weights)
    assert load_wording(path).wording == "user:test-wording"
    # without a name: the file name
    path2 = tmp_path / "plain.json"
    path2.write_text(json.dumps({"items": full_entries()}), encoding="utf-8")
    assert load_wording(path2).wording == "user:plain.json"


def test_save_wording_round_trip(tmp_path, vsm):
    path = save_wording(vsm, tmp_path / "template.json")
    loaded = load_wording(path)
    assert loaded.wording == "user:jaxalign-v1"
    assert loaded.items == vsm.items  # Item is a frozen dataclass: compared field by field


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda e: e.pop(5), r"missing item\(s\) 6"),
        (lambda e: e[2].update(options=["a", "b", "c", "d"]), "item '3': expected 5 option labels, got 4"),
        (lambda e: e[3].update(id="25"), r"unknown item id\(s\) 25"),
        (lambda e: e[4].update(id="1"), "duplicate item id '1'"),
        (lambda e: e[7].pop("text"), r"items\[7\]: missing field 'text'"),
        (lambda e: e[8].pop("options"), r"items\[8\]: missing field 'options'"),
        (lambda e: e[9].update(text=""), "text must be a non-empty string"),
        (lambda e: e[1].update(options="abcde"), "'options' must be a list"),
    ],
)
def test_load_wording_rejects_bad_items(tmp_path, edit, message):
    entries = full_entries()
    edit(entries)
    path = write_wording(tmp_path / "bad.json", entries)
    with pytest.raises(ValueError, match=message):
        load_wording(path)


def test_load_wording_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="wording file not found"):
        vsm13(wording=tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"items": [', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_wording(broken)
    no_items = tmp_path / "no_items.json"
    no_items.write_text(json.dumps({"name": "x"}), encoding="utf-8")
    with pytest.raises(ValueError, match="missing field 'items'"):
        load_wording(no_items)
    a_list = tmp_path / "list.json"
    a_list.write_text(json.dumps(full_entries()), encoding="utf-8")
    with pytest.raises(ValueError, match="top level must be a JSON object"):
        load_wording(a_list)


# ------------------------------------------------------------------------------ L1 loss
def test_l1_loss_is_a_mean_over_available_dimensions():
    target = np.array([10.0, 20.0, np.nan, 40.0, np.nan, 60.0], dtype=np.float32)
    dims = np.array([[12.0, 20.0, 999.0, 30.0, -5.0, 61.0]], dtype=np.float32)
    # |12-10| + 0 + |30-40| + |61-60| = 2 + 10 + 1 = 13 over 4 available dims
    np.testing.assert_allclose(l1_loss(dims, target), [13 / 4], rtol=1e-6)
    target_obj = custom_target({"PDI": 10, "IDV": 20, "UAI": 40, "IVR": 60})
    np.testing.assert_allclose(l1_loss(dims, target_obj), [13 / 4], rtol=1e-6)


def test_l1_loss_ignores_missing_target_dims_however_large():
    saudi = hofstede("Saudi Arabia")  # only LTO 36 and IVR 52
    base = np.array([0.0, 0.0, 0.0, 0.0, 40.0, 50.0], dtype=np.float32)
    expected = (4.0 + 2.0) / 2
    for big in (0.0, 1e3, -1e6, 3e30):
        dims = base.copy()
        dims[:4] = big
        assert float(l1_loss(dims, saudi)) == pytest.approx(expected)
    grad = jax.grad(lambda d: l1_loss(d, saudi.values))(jnp.asarray(base))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [0, 0, 0, 0, 0.5, -0.5])


def test_l1_loss_batches_and_jits_and_surfaces_bad_rows():
    target = hofstede("USA").values
    dims = jax.random.uniform(jax.random.key(1), (4, 3, 6), minval=0, maxval=100)
    losses = l1_loss(dims, target)
    assert losses.shape == (4, 3)
    np.testing.assert_allclose(losses[2, 1], np.mean(np.abs(np.asarray(dims[2, 1]) - target)), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(l1_loss)(dims, target), losses, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(l1_loss, in_axes=(0, None))(dims, target), losses, rtol=1e-6)
    rows = np.zeros((4, 6), dtype=np.float32)
    rows[1, 0] = np.nan  # on an available dim
    rows[2, 3] = np.inf
    rows[3, 0] = np.nan  # on a dim the target lacks
    saudi_like = np.array([np.nan, 1, 1, 1, 1, 1], dtype=np.float32)
    out = np.asarray(l1_loss(rows, saudi_like))
    assert np.isfinite(out[0]) and np.isinf(out[2]) and np.isnan(out[3])
    out_usa = np.asarray(l1_loss(rows, target))
    assert np.isnan(out_usa[1])


def test_l1_loss_errors():
    with pytest.raises(ValueError, match="no available dimension"):
        l1_loss(np.zeros(6), np.full(6, np.nan))
    with pytest.raises(ValueError, match="must share D"):
        l1_loss(np.zeros((2, 5)), np.zeros(6))


# ------------------------------------------------------------------------------ Kendall tau
def test_kendall_tau_hand_computed():
    # x increasing; y = 3,1,2,5,4: concordant 7, discordant 3 -> (7 - 3) / 10
    assert float(kendall_tau([1, 2, 3, 4, 5], [3, 1, 2, 5, 4])) == pytest.approx(0.4)
    # ties: pairs (1,2) tied in x, (2,3) tied in y; C = 4, D = 0 -> 4 / sqrt(5 * 5)
    assert float(kendall_tau([1, 1, 2, 3], [1, 2, 2, 3])) == pytest.approx(0.8)
    # NaN pairs dropped
    x = [1, 1, 2, np.nan, 3, 7]
    y = [1, 2, 2, 5, 3, np.nan]
    assert float(kendall_tau(x, y)) == pytest.approx(0.8)
    assert float(kendall_tau([1, 2, 3], [3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(float(kendall_tau([1, 1, 1], [1, 2, 3])))  # constant side
    assert float(jax.jit(kendall_tau)(jnp.arange(5.0), jnp.arange(5.0))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])


def test_kendall_tau_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = rng.integers(0, 6, size=30).astype(float)  # many ties
        y = rng.integers(0, 6, size=30).astype(float)
        x[rng.integers(0, 30, size=3)] = np.nan
        expected = stats.kendalltau(x, y, nan_policy="omit").statistic
        assert float(kendall_tau(x, y)) == pytest.approx(expected, abs=1e-5)
