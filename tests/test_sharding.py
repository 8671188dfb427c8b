"""Sharding over a (data, model) mesh: same numbers on 1 and on 2/4/8 simulated CPU devices.

The device count of a CPU backend is fixed when jax starts, so the multi-device cases run in one
child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before jax is
imported; it prints one JSON object that the tests below check. Tolerances: answer
probabilities within 1e-5 of the one-device pass (measured differences: up to ~5e-6, from
the different reduction order of the model axis' all-reduce), losses within 1e-4 relative (an index multiplies item-mean
differences by 25-35, so absolute loss differences reach ~1.6e-4 on losses of ~40).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

PROBS_TOL = 1e-5
LOSS_TOL = 1e-4

CHILD = textwrap.dedent(r"""
    import json, re
    import numpy as np, jax
    from jaxalign import parallel, vsm13
    from jaxalign.model import load_model
    from jaxalign.scoring import make_scorer

    out = {"devices": len(jax.devices())}
    instrument = vsm13()
    target = np.asarray([60, 40, 50, 70, 30, 55], np.float32)
    rng = np.random.default_rng(0)
    prompts = (0.2 * rng.standard_normal((8, 4, 64))).astype(np.float32)
    options = dict(k=4, target=target, mode="full", n_buckets=1)

    def mesh_of(data, model):
        return parallel.make_mesh(data, model, devices=jax.devices()[: data * model])

    lm = load_model("tiny-random", dtype="float32")
    ref = make_scorer(lm, instrument, **options)(prompts)
    out["ref_loss"] = np.asarray(ref.loss).tolist()
    out["scoring"] = {}
    for data, model in [(2, 1), (4, 1), (8, 1), (4, 2), (2, 2)]:
        mesh = mesh_of(data, model)
        sharded_lm = load_model("tiny-random", dtype="float32", mesh=mesh)
        scorer = make_scorer(sharded_lm, instrument, **options, mesh=mesh)
        got = scorer(prompts)
        q_spec = sharded_lm.params["layers"]["q_proj"][...].sharding.spec
        out["scoring"][f"{data},{model}"] = {
            "probs_diff": float(np.abs(np.asarray(got.probs) - np.asarray(ref.probs)).max()),
            "loss_diff": float(np.abs(np.asarray(got.loss) - np.asarray(ref.loss)).max()),
            "loss_spec": str(got.loss.sharding.spec),
            "q_proj_spec": str(q_spec),
        }
        if (data, model) == (8, 1):
            hlo = jax.jit(scorer.score_fn).lower(parallel.replicate(prompts, mesh), scorer.inputs).compile().as_text()
            out["collectives_data8"] = sorted(set(re.findall(
                r" (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(", hlo)))
        if (data, model) == (4, 2):  # population 6 does not divide by 4: padded to 8, 2 dropped
            six = scorer(prompts[:6])
            out["pad6"] = {"shape": list(six.probs.shape), "probs_diff": float(
                np.abs(np.asarray(six.probs) - np.asarray(ref.probs[:6])).max())}

    # a short DE run of the production pipeline (jaxalign.align's), same seed: 1 device, data=4,
    # data=2 x model=2; the C*P members sharded over "data", the optimizer state replicated
    from jaxalign import AlignConfig, resolve_target
    from jaxalign.optimize import pipeline

    out["de"] = {}
    de_config = AlignConfig(k=4, subspace=8, population=8, generations=3, chunk_size=3, seed=3, baselines=())
    for data, model in [(1, 1), (4, 1), (2, 2)]:
        mesh = None if data * model == 1 else mesh_of(data, model)
        run_lm = load_model("tiny-random", dtype="float32", mesh=mesh)
        problem = pipeline.setup(run_lm, [resolve_target("China")], instrument, de_config, mesh=mesh)
        outcome = pipeline.run(problem)
        state_specs = sorted({jax.tree_util.keystr(path) + " " + str(getattr(x.sharding, "spec", "?"))
                              for path, x in jax.tree_util.tree_leaves_with_path(outcome.state)})
        out["de"][f"{data},{model}"] = {
            "best_loss": float(outcome.state.best_loss[0]),
            "history": np.asarray(outcome.history["best_loss"])[:, 0].tolist(),  # (steps,) of target 0
            "best_z": np.asarray(outcome.state.best_z[0]).tolist(),
            "state_specs": state_specs,
        }

    # a model axis that does not divide the tiny model's heads (4) / KV heads (2)
    try:
        load_model("tiny-random", dtype="float32", mesh=mesh_of(2, 4))
        out["bad_model_axis"] = None
    except ValueError as error:
        out["bad_model_axis"] = str(error)
""")


def run_child(code: str, timeout: int) -> dict:
    """Runs ``code`` in a fresh Python with 8 simulated CPU devices; its ``RESULT {json}`` line."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def child() -> dict:
    """One child for the whole module (CHILD, then CHILD_SLOTS and CHILD_METHODS below): one start-up."""
    return run_child(CHILD + CHILD_SLOTS + CHILD_METHODS, timeout=900)


@pytest.mark.slow
def test_child_sees_eight_devices(child):
    assert child["devices"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["2,1", "4,1", "8,1", "4,2", "2,2"])
def test_scoring_pass_matches_one_device(child, mesh):
    case = child["scoring"][mesh]
    assert case["probs_diff"] <= PROBS_TOL
    assert case["loss_diff"] <= LOSS_TOL * max(1.0, max(abs(v) for v in child["ref_loss"]))
    assert case["loss_spec"] == "P('data',)"     # results stay on their data shard
    model = int(mesh.split(",")[1])
    if model > 1:
        assert case["q_proj_spec"] == "P(None, None, 'model')"


@pytest.mark.slow
def test_data_parallel_scoring_has_no_collectives(child):
    # data axis only: each device scores its own members; nothing is exchanged inside the pass
    assert child["collectives_data8"] == []


@pytest.mark.slow
def test_population_that_does_not_divide_is_padded_and_trimmed(child):
    assert child["pad6"]["shape"] == [6, 24, 5]
    assert child["pad6"]["probs_diff"] <= PROBS_TOL


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["4,1", "2,2"])
def test_short_de_run_matches_one_device(child, mesh):
    one, sharded = child["de"]["1,1"], child["de"][mesh]
    assert one["history"][-1] < one["history"][0]  # the run did something
    assert abs(sharded["best_loss"] - one["best_loss"]) <= LOSS_TOL * max(1.0, abs(one["best_loss"]))
    for a, b in zip(one["history"], sharded["history"]):
        assert abs(a - b) <= LOSS_TOL * max(1.0, abs(a))
    assert max(abs(a - b) for a, b in zip(one["best_z"], sharded["best_z"])) <= 1e-3


@pytest.mark.slow
def test_optimizer_state_is_replicated(child):
    for mesh in ("4,1", "2,2"):
        assert all(spec.endswith("P()") for spec in child["de"][mesh]["state_specs"]), \
            child["de"][mesh]["state_specs"]


@pytest.mark.slow
def test_model_axis_that_does_not_divide_is_refused(child):
    message = child["bad_model_axis"]
    assert message is not None, "a model axis of 4 was accepted for 4 heads / 2 KV heads"
    assert "KV heads (num_key_value_heads) = 2" in message and "attention heads" not in message and "model axis of size 4" in message


# -- cheap checks in this process (one CPU device) ----------------------------------------------

def test_parse_mesh():
    from jaxalign.parallel import parse_mesh

    assert parse_mesh("data=4,model=2") == {"data": 4, "model": 2}
    assert parse_mesh("model=2") == {"model": 2}
    assert parse_mesh("data=-1, model=2") == {"model": 2}
    for bad in ("", "data=4,model", "batch=2", "data=two", "model=0", "data=2,data=2"):
        with pytest.raises(ValueError, match="mesh"):
            parse_mesh(bad)


def test_make_mesh_refuses_wrong_device_count():
    import jax

    from jaxalign.parallel import make_mesh

    n = len(jax.devices())
    mesh = make_mesh()
    assert mesh.axis_names == ("data", "model") and mesh.devices.shape == (n, 1)
    with pytest.raises(ValueError, match=f"needs {2 * n} devices, but {n} are available"):
        make_mesh(data=2 * n)
    with pytest.raises(ValueError, match="does not divide"):
        make_mesh(model=n + 1)


def test_check_model_divisible_names_the_dimension():
    import jax

    from jaxalign.parallel import check_model_divisible, make_mesh

    mesh = make_mesh(devices=jax.devices()[:1])
    config = SimpleNamespace(num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                             vocab_size=128256)
    check_model_divisible(config, mesh)  # model axis 1: always fine
    fake = SimpleNamespace(shape={"data": 1, "model": 5})
    with pytest.raises(ValueError, match=r"vocabulary rows \(vocab_size\) = 128256") as info:
        check_model_divisible(config, fake)
    assert "attention heads (num_attention_heads) = 32" in str(info.value)


def test_initialize_distributed_is_a_no_op_on_one_host(monkeypatch):
    from jaxalign import parallel

    for name in parallel._CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not parallel.launched_on_several_hosts()
    assert parallel.initialize_distributed() is False
    assert parallel.is_main_process()
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1,10.0.0.2")
    assert parallel.launched_on_several_hosts()
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert not parallel.launched_on_several_hosts()


# ------------------------------------------------------------------ the default scorer, every slot
# The scorer users run by default (cached keys/values, length buckets) in every soft-prompt slot
# on a 2 x 2 (data, model) mesh (4 members per data shard, weights split over the model axis), and
# its two cached paths (shared prefix: user_start; item-first: after_item) also on 8 data-parallel
# devices (one member each), against one device. Runs in the module's one child, after CHILD.
SLOTS_BY_MESH = {(2, 2): ("user_start", "system", "after_item", "user_end", "start"),
                 (8, 1): ("user_start", "after_item")}
CHILD_SLOTS = f"SLOTS_BY_MESH = {SLOTS_BY_MESH!r}\n" + textwrap.dedent(r"""
    from jaxalign.prompting.layout import SLOTS

    prompts = (0.2 * np.random.default_rng(1).standard_normal((8, 3, 64))).astype(np.float32)
    refs = {slot: np.asarray(make_scorer(lm, instrument, k=3, target=target, slot=slot)(prompts).probs)
            for slot in SLOTS}
    out["slots"] = {}
    for (data, model), slots in SLOTS_BY_MESH.items():
        mesh = mesh_of(data, model)
        sharded = load_model("tiny-random", dtype="float32", mesh=mesh)
        for slot in slots:
            got = make_scorer(sharded, instrument, k=3, target=target, slot=slot, mesh=mesh)(prompts)
            out["slots"][f"{slot}@{data},{model}"] = float(np.abs(np.asarray(got.probs) - refs[slot]).max())
""")

# ------------------------------------------------------------- gradient tuning and the hybrid
# `method="gradient"` and `"hybrid"` through jaxalign.align on a 2 x 2 mesh and on one device:
# the one member each step scores is padded to the data axis, its gradient flows back through the
# all-gathers. Runs in the module's one child, after CHILD_SLOTS.
CHILD_METHODS = textwrap.dedent(r"""
    import jaxalign
    from jaxalign import AlignConfig

    out["methods"] = {}
    mesh22 = mesh_of(2, 2)
    models = {"1,1": (lm, None), "2,2": (load_model("tiny-random", dtype="float32", mesh=mesh22), mesh22)}
    for method in ("gradient", "hybrid"):
        config = AlignConfig(method=method, k=2, subspace=8, population=4, generations=5, baselines=())
        for name, (run_lm, mesh) in models.items():
            result = jaxalign.align(run_lm, "China", config=config, mesh=mesh, progress=False)
            out["methods"][f"{method}@{name}"] = {
                "loss": float(result.loss), "soft_prompt": np.asarray(result.soft_prompt).tolist(),
                "history": np.asarray(result.history["best_loss"]).ravel().tolist()}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_default_scorer_on_a_mesh_matches_one_device_in_every_slot(child):
    from jaxalign.prompting.layout import SLOTS

    cases = child["slots"]
    assert len(cases) == sum(map(len, SLOTS_BY_MESH.values())) and {c.split("@")[0] for c in cases} == set(SLOTS)
    worst = {case: diff for case, diff in cases.items() if diff > PROBS_TOL}
    assert worst == {}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "hybrid"])
def test_gradient_and_hybrid_on_a_mesh_match_one_device(child, method):
    one, sharded = child["methods"][f"{method}@1,1"], child["methods"][f"{method}@2,2"]
    assert one["history"][-1] < one["history"][0]  # the run did something
    assert len(sharded["history"]) == len(one["history"])
    for a, b in zip(one["history"], sharded["history"]):
        assert abs(a - b) <= LOSS_TOL * max(1.0, abs(a))
    assert abs(sharded["loss"] - one["loss"]) <= LOSS_TOL * max(1.0, abs(one["loss"]))
    assert np.abs(np.asarray(sharded["soft_prompt"]) - np.asarray(one["soft_prompt"])).max() <= 1e-3
