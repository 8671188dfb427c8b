"""Smoke tests of the benchmark scripts on tiny settings, plus their FLOP count and torch twin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import common, de_cost, dims, steps, summarize, throughput


def test_model_flops_by_hand():
    config = common.preset_config("tiny", vocab_size=100)
    # tiny: d=64, F=192, L=4, 4 heads x 16, 2 KV heads -> per layer 64*16*(8+4) + 3*64*192 + 2*64
    per_layer = 64 * 16 * 12 + 3 * 64 * 192 + 128
    assert common.non_embedding_params(config) == 4 * per_layer + 64
    lengths = np.array([3, 1])
    dense = 2 * (4 * per_layer + 64) * 4
    attention = 4 * 4 * 4 * 16 * (6 + 1)  # L * 4 * heads * head_dim * (3*4/2 + 1*2/2)
    assert common.model_flops(config, lengths) == dense + attention


def test_executed_flops_by_hand():
    from types import SimpleNamespace

    config = common.preset_config("tiny", vocab_size=100)
    per_token = 2 * common.non_embedding_params(config)
    per_pair = 4 * 4 * 4 * 16  # layers * 4 * heads * head_dim

    def bucket(n_items, tp, ts, shared):
        return SimpleNamespace(prefix_ids=np.zeros((n_items, tp)), suffix_ids=np.zeros((n_items, ts)),
                               prefix_shared=shared)

    def scorer(mode, *buckets):
        return SimpleNamespace(k=2, mode=mode, inputs=SimpleNamespace(buckets=buckets))

    # full: 3 members x 2 items, T = 4 + 2 + 5 = 11 tokens, 11 * 11 score entries each
    assert common.executed_flops(config, scorer("full", bucket(2, 4, 5, True)), 3) == (
        6 * 11 * per_token + 6 * 121 * per_pair)
    # cached, shared prefix: prefix 4 once; 3 x 2 soft vs 6 keys; 2 x 3 rows of 5 vs 11 keys
    assert common.executed_flops(config, scorer("cached", bucket(2, 4, 5, True)), 3) == (
        (4 + 6 + 30) * per_token + (16 + 3 * 2 * 6 + 6 * 5 * 11) * per_pair)
    # cached, item first: 2 prefixes of 4; 3 x 2 rows of 2 + 5 tokens vs 11 keys
    assert common.executed_flops(config, scorer("cached", bucket(2, 4, 5, False)), 3) == (
        (8 + 42) * per_token + (2 * 16 + 6 * 7 * 11) * per_pair)


def test_preset_shapes():
    config = common.preset_config("100m")
    assert 80e6 < common.non_embedding_params(config) < 90e6
    assert 120e6 < config.num_parameters < 140e6
    eight = common.preset_config("llama3-8b")
    assert 7.9e9 < eight.num_parameters < 8.1e9
    with pytest.raises(ValueError, match="unknown preset"):
        common.preset_config("gpt5")


@pytest.mark.slow
def test_throughput_json_and_torch_agreement(capsys, tmp_path):
    result = throughput.main(["--preset", "tiny", "--population", "2", "--k", "2", "--layers", "2",
                              "--repeats", "1", "--torch-threads", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    for key in ("sequences_per_s", "tokens_per_s", "compile_s", "mfu", "torch_sequences_per_s",
                "speedup_vs_torch", "device", "preset", "P", "K", "layout", "dtype", "date", "command"):
        assert key in printed, key
    assert printed["P"] == 2 and printed["K"] == 2 and printed["Q"] == 24 and printed["layers"] == 2
    assert printed["command"].startswith("python benchmarks/throughput.py --preset tiny")
    assert result["sequences_per_s"] > 0 and result["torch_sequences_per_s"] > 0
    # identical weights: the PyTorch loop gives the same answer distributions
    assert result["max_abs_prob_diff"] < 1e-4
    # real tokens exclude padding
    assert result["real_tokens_per_pass"] < result["padded_tokens_per_pass"]
    # the RESULTS.md table reads the JSON back
    (tmp_path / "throughput_tiny.json").write_text(json.dumps(printed))
    table = summarize.main([str(tmp_path)])
    assert "| tiny | user_start |" in table and f"{printed['sequences_per_s']:.2f}" in table


@pytest.mark.slow
def test_throughput_several_layouts_without_torch(tmp_path):
    result = throughput.main(["--preset", "tiny", "--population", "2", "--k", "3", "--repeats", "1",
                              "--layout", "after_item,user_end", "--no-torch", "--layers", "1",
                              "--mode", "full,cached"])
    runs = result["runs"]
    assert [(r["layout"], r["mode"]) for r in runs] == [
        ("after_item", "full"), ("after_item", "cached"), ("user_end", "full"), ("user_end", "cached")]
    assert result["layout"] == "after_item" and result["layers"] == 1 and result["mode"] == "full"
    assert result["torch_sequences_per_s"] is None and result["speedup_vs_torch"] is None
    # item first with caches executes less than scoring from scratch; padding makes "full" more
    full, cached = runs[2], runs[3]
    assert cached["executed_flops_per_pass"] < full["model_flops_per_pass"] < full["executed_flops_per_pass"]
    (tmp_path / "throughput_tiny.json").write_text(json.dumps(result))
    assert summarize.main([str(tmp_path)]).count("| tiny |") == 4


def test_throughput_rejects_unknown_layout():
    with pytest.raises(SystemExit):
        throughput.main(["--layout", "user_start,middle", "--no-torch"])


@pytest.mark.slow
def test_throughput_over_device_counts(capsys):
    # two simulated CPU devices in their own subprocesses (benchmarks/scaling.py's machinery)
    result = throughput.main(["--preset", "tiny", "--layers", "1", "--population", "4", "--k", "2",
                              "--repeats", "1", "--devices", "1,2", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == result["rows"] and printed["simulated_cpu_devices"] is True
    assert printed["command"].endswith("--devices 1,2 --json")
    one, two = printed["rows"]
    assert [one["devices"], two["devices"]] == [1, 2]
    assert "data=2,model=1 (2 cpu devices" in two["mesh"]
    for row in (one, two):
        assert row["sequences"] == 4 * 24 and row["sequences_per_s"] > 0
        assert row["per_device_sequences_per_s"] == pytest.approx(row["sequences_per_s"] / row["devices"])
    assert one["scaling_efficiency"] == 1.0
    assert two["scaling_efficiency"] == pytest.approx(
        two["per_device_sequences_per_s"] / one["per_device_sequences_per_s"])
    with pytest.raises(SystemExit, match="comma-separated device counts"):
        throughput.main(["--devices", "1,two"])


@pytest.mark.slow
def test_dims_writes_tables(tmp_path, capsys):
    report = dims.main(["--countries", "Saudi Arabia", "--methods", "naive,de", "--population", "4",
                        "--generations", "1", "--k", "2", "--subspace", "4", "--out", str(tmp_path),
                        "--no-progress"])
    entry = report["countries"]["Saudi Arabia"]
    assert set(entry["methods"]) == {"naive", "de"}
    assert entry["target"]["dims"][:4] == [None] * 4  # missing dimensions stay masked
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["command"].startswith("python benchmarks/dims.py") and "date" in saved
    markdown = (tmp_path / "results.md").read_text()
    assert "| Saudi Arabia | naive |" in markdown and "| mean |" in markdown
    de = saved["config"]["de"]  # DE's own settings, whatever jaxalign's defaults are
    assert de == {k: saved["align_config"][k] for k in de} and saved["align_config"]["population"] == 4
    assert f"CR {de['crossover_rate']}" in markdown and "load average" in markdown
    printed = capsys.readouterr().out
    assert "L1 loss" in printed and saved["device"] in printed and saved["command"] in printed


@pytest.mark.slow
def test_dims_seeds_and_culturalbench(tmp_path):
    report = dims.main(["--countries", "China,Saudi Arabia", "--methods", "naive,de", "--seeds", "0,1",
                        "--population", "4", "--generations", "1", "--k", "1", "--subspace", "4",
                        "--culturalbench", "tests/data/culturalbench", "--out", str(tmp_path),
                        "--no-progress"])
    china = report["countries"]["China"]["methods"]["de"]
    runs = [run["methods"]["China"]["de"]["loss"] for run in report["per_seed"]]
    assert len(runs) == 2 and china["loss"] == pytest.approx(np.mean(runs))
    assert china["loss_std"] == pytest.approx(np.std(runs, ddof=1))
    bench = report["culturalbench"]
    assert bench["Saudi Arabia"]["easy"] is None  # no fixture question about it
    easy = bench["China"]["easy"]
    assert easy["questions"] == 3 and 0 <= easy["plain"] <= 1 and 0 <= easy["aligned"] <= 1
    markdown = (tmp_path / "results.md").read_text()
    assert "CulturalBench accuracy" in markdown and " ± " in markdown
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_dims_rejects_unknown_method(tmp_path):
    with pytest.raises(SystemExit):
        dims.main(["--methods", "naive,magic", "--out", str(tmp_path)])


@pytest.mark.slow
def test_de_cost_rows():
    report = de_cost.main(["--populations", "4", "--ks", "2", "--generations", "1",
                           "--subspace", "4", "--layers", "1", "--json"])
    (row,) = report["rows"]
    assert row["P"] == 4 and row["K"] == 2 and row["layers"] == 1 and row["wall_s"] > 0


@pytest.mark.slow
def test_steps_before_after_agree():
    report = steps.main(["--preset", "tiny", "--population", "2", "--repeats", "1",
                         "--steps", "buckets"])
    rows = {row["step"]: row for row in report["steps"]}
    assert set(rows) == {"buckets"}
    for row in rows.values():
        # an optimisation may change speed, never the answers
        assert row["max_abs_prob_diff"] < 1e-4
        assert row["speedup"] == pytest.approx(row["before"]["median_s"] / row["after"]["median_s"])
    assert rows["buckets"]["before"]["options"] == {"mode": "full", "n_buckets": 1}
    with pytest.raises(SystemExit):
        steps.main(["--steps", "warp_drive"])


@pytest.mark.slow
def test_generate_benchmark_json_and_torch_agreement(capsys):
    from benchmarks import generate as generate_bench

    result = generate_bench.main(["--preset", "tiny", "--layers", "2", "--batch", "2", "--new-tokens", "6",
                                  "--repeats", "1", "--torch-threads", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON document
    for key in ("ttft_s", "decode_tokens_per_s", "torch_ttft_s", "torch_decode_tokens_per_s",
                "decode_speedup_vs_torch", "device", "date", "command", "B", "K", "M"):
        assert key in printed, key
    assert printed["command"].startswith("python benchmarks/generate.py --preset tiny")
    assert printed["B"] == 2 and printed["M"] == 6 and printed["layers"] == 2
    assert result["decode_tokens_per_s"] > 0 and result["torch_decode_tokens_per_s"] > 0
    # same weights, greedy: transformers generate emits the same tokens
    assert result["tokens_agree"] == 1.0
