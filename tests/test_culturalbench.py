"""CulturalBench: loading, batched scoring against a one-question-at-a-time reference, grading.

The reference writes each prompt out by hand (the layout of the question, the options and the
instruction, rendered with the tokenizer's chat template and split at a marker of the test's
own), tokenizes it without padding, splices the soft vectors in as embeddings and runs
``lm.logits`` (full vocabulary, batch of one, no mask). The answer tokens are looked up by
encoding the letters after the open assistant turn. So padding, batching, chunking, the
prefix/soft/suffix layout and the token lookup are all checked against code that shares none
of them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jaxalign.evaluate.culturalbench import (
    BenchQuestion,
    BenchSet,
    choice_token_ids,
    evaluate_culturalbench,
    grade,
    load_culturalbench,
    render_judgements,
    wilson_interval,
)

DATA = Path(__file__).parent / "data" / "culturalbench"
MARK = "\u00a7\u00a7SOFT\u00a7\u00a7"
K = 2


@pytest.fixture(scope="module")
def prompt(lm):
    std = float(np.asarray(lm.embedding_matrix).std())
    return (std * np.random.default_rng(3).normal(size=(K, lm.config.hidden_size))).astype(np.float32)


@pytest.fixture(scope="module")
def easy():
    return load_culturalbench(DATA, set="easy")


@pytest.fixture(scope="module")
def hard():
    return load_culturalbench(DATA, set="hard")


# ----------------------------------------------------------------------------- loading
def test_fixture_files_load_in_published_format(easy, hard):
    assert easy.n_questions == 6 and easy.n_judgements == 6 and easy.skipped == 0
    q = easy.questions[1]
    assert q.question_idx == "fx-2" and q.country == "China"
    assert q.options == ("The youngest child", "The eldest guest", "The cook", "Whoever arrives first")
    assert q.correct == (False, True, False, False)  # answer B
    assert easy.countries() == ["China", "India", "United States"]
    # Hard: rows grouped by question_idx, one judgement per row
    assert hard.n_questions == 3 and hard.n_judgements == 12
    assert [q.question_idx for q in hard.questions] == ["fx-1", "fx-2", "fx-4"]
    assert hard.questions[2].correct == (True, True, False, False)  # two right answers
    assert hard.for_country("india").n_questions == 1
    assert easy.for_country("CHINA").n_questions == 3


def test_for_country_takes_the_survey_names_of_a_country(easy, hard):
    # the benchmark says "United States", the survey U.S.A.; any name resolve_target knows works
    for name in ("U.S.A.", "USA", "united states"):
        assert [q.question_idx for q in easy.for_country(name).questions] == ["fx-6"]
        assert {q.country for q in easy.for_country(name).questions} == {"United States"}
    with pytest.raises(ValueError, match="no CulturalBench-Hard question about 'U.S.A.'"):
        hard.for_country("U.S.A.")  # Hard has no question about it


def test_jsonl_and_json_read_like_csv(easy, hard, tmp_path):
    import csv

    for bench, name in ((easy, "CulturalBench-Easy"), (hard, "CulturalBench-Hard")):
        with open(DATA / f"{name}.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if name.endswith("Hard"):  # JSON has real booleans
            for row in rows:
                row["answer"] = row["answer"] == "True"
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
        for suffix in (".jsonl", ".json"):
            again = load_culturalbench(tmp_path / f"{name}{suffix}", set=bench.name)
            assert again.questions == bench.questions


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_schema_errors_name_the_field(tmp_path):
    easy_header = "question_idx,prompt_question,prompt_option_a,prompt_option_b,prompt_option_c,prompt_option_d,answer,country\n"
    no_country = _write(tmp_path, "e1.csv", easy_header.replace(",country", "") + "1,Q?,a,b,c,d,A\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) 'country'"):
        load_culturalbench(no_country, set="easy")
    bad_letter = _write(tmp_path, "e2.csv", easy_header + "1,Q?,a,b,c,d,E,China\n")
    with pytest.raises(ValueError, match=r"row 2 \(question_idx 1\): field 'answer' must be one of A, B, C, D"):
        load_culturalbench(bad_letter, set="easy")
    with pytest.raises(ValueError, match="looks like CulturalBench-Easy"):
        load_culturalbench(DATA / "CulturalBench-Easy.csv", set="hard")
    with pytest.raises(ValueError, match="looks like CulturalBench-Hard"):
        load_culturalbench(DATA / "CulturalBench-Hard.csv", set="easy")
    hard_header = "question_idx,prompt_question,prompt_option,answer,country\n"
    maybe = _write(tmp_path, "h1.csv", hard_header + "7,Q?,a,True,China\n7,Q?,b,maybe,China\n")
    with pytest.raises(ValueError, match=r"row 3 \(question_idx 7\): field 'answer' must be True or False"):
        load_culturalbench(maybe, set="hard")
    split = _write(tmp_path, "h2.csv", hard_header + "7,Q?,a,True,China\n7,Q?,b,False,Japan\n")
    with pytest.raises(ValueError, match="field 'country' differs between rows of question_idx 7"):
        load_culturalbench(split, set="hard")
    with pytest.raises(ValueError, match="unknown CulturalBench set"):
        load_culturalbench(DATA, set="medium")
    with pytest.raises(FileNotFoundError, match="no CulturalBench file"):
        load_culturalbench(tmp_path / "absent.csv")
    with pytest.raises(FileNotFoundError, match="holds no CulturalBench-Easy.csv"):
        load_culturalbench(tmp_path, set="easy")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_culturalbench(_write(tmp_path, "x.txt", "hello"))
    with pytest.raises(ValueError, match="no CulturalBench-Easy question about 'Narnia'.*China, India"):
        load_culturalbench(DATA).for_country("Narnia")


def test_rows_with_empty_values_are_skipped_and_counted(tmp_path):
    header = "question_idx,prompt_question,prompt_option,answer,country\n"
    path = _write(tmp_path, "h.csv", header + "1,Q?,a,True,China\n1,Q?,,False,China\n2,R?,a,False,China\n")
    bench = load_culturalbench(path, set="hard")
    assert bench.skipped == 1 and [q.question_idx for q in bench.questions] == ["2"]


# ----------------------------------------------------------------------------- statistics
def test_wilson_interval_against_hand_computation():
    # 8 of 10, z = 1.959964: p = 0.8, z^2 = 3.8414588; denominator 1 + z^2/10 = 1.3841459;
    # centre (0.8 + 0.1920729) / 1.3841459 = 0.7167402;
    # half 1.959964 * sqrt(0.016 + 0.0096036) / 1.3841459 = 0.2265777
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.7167402 - 0.2265777, abs=1e-6)   # 0.4901625
    assert high == pytest.approx(0.7167402 + 0.2265777, abs=1e-6)  # 0.9433179
    # 0 of 10: [0, z^2 / (n + z^2)] = [0, 3.841459 / 13.841459]
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775328, abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((1 - 0.2775328, 1.0), abs=1e-6)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


# ----------------------------------------------------------------------------- grading rules
def test_hard_counts_a_question_only_when_all_judgements_are_right():
    questions = (
        BenchQuestion("1", "A-land", "Q1", ("a", "b", "c", "d"), (True, False, False, False)),
        BenchQuestion("2", "A-land", "Q2", ("a", "b", "c", "d"), (True, True, False, False)),
        BenchQuestion("3", "B-land", "Q3", ("a", "b", "c", "d"), (False, False, False, True)),
    )
    bench = BenchSet("hard", questions, source="hand-made")

    class Batch:  # what grade() reads of a JudgementBatch
        question_of = np.repeat(np.arange(3), 4).astype(np.int32)
        option_of = np.tile(np.arange(4), 3).astype(np.int32)
        answer_tokens = ("True", "False")
        n = 12

    says_true = np.array([
        1, 0, 0, 0,   # Q1: all four right
        1, 0, 0, 0,   # Q2: option b is a second right answer, judged False: wrong
        0, 0, 0, 1,   # Q3: all four right
    ], bool)
    logits = np.where(says_true[:, None], [[2.0, -1.0]], [[-1.0, 2.0]])  # (12, 2): [True, False]
    result = grade(bench, Batch, logits)
    assert result.question_correct.tolist() == [True, False, True]
    assert (result.n_correct, result.n_questions, result.n_judgements) == (2, 3, 12)
    assert result.per_country == {"A-land": (1, 2), "B-land": (1, 1)}
    assert result.ci95 == wilson_interval(2, 3)


# ----------------------------------------------------------------------------- scoring vs reference
USER_CONTENT = {  # the user turn of each slot, written out here (not with jaxalign's layout code)
    "user_start": lambda body, instruction: f"{MARK}{body}{instruction}",
    "after_item": lambda body, instruction: f"{body}{MARK}{instruction}",
    "user_end": lambda body, instruction: f"{body}{instruction}{MARK}",
}
EASY_INSTRUCTION_TEXT = "Answer with one letter from A to D."


def _easy_body(q):
    return q.question + "\n" + "\n".join(f"{L}. {o}" for L, o in zip("ABCD", q.options)) + "\n"


def _reference_logits(lm, body, instruction, prompt, answers, slot="user_start"):
    tok = lm.tokenizer
    user = USER_CONTENT[slot](body, instruction)
    text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    before, after = text.split(MARK)
    encode = lambda s: np.asarray(tok(s, add_special_tokens=False)["input_ids"], np.int32)  # noqa: E731
    emb = np.asarray(lm.embedding_matrix)
    embeds = np.concatenate([emb[encode(before)], prompt, emb[encode(after)]])[None]
    context = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    n_context = len(encode(context))
    ids = [int(encode(context + a)[n_context]) for a in answers]  # first token of each answer
    return np.asarray(lm.logits(inputs_embeds=embeds))[0, -1, ids]


@pytest.mark.slow
def test_easy_matches_one_question_at_a_time_reference(lm, easy, prompt):
    result = evaluate_culturalbench(lm, easy, soft_prompt=prompt, batch_size=4)  # 2 chunks, 2 padding rows
    assert result.answer_tokens == ("A", "B", "C", "D")
    for qi, q in enumerate(easy.questions):
        body = q.question + "\n" + "\n".join(f"{L}. {o}" for L, o in zip("ABCD", q.options)) + "\n"
        ref = _reference_logits(lm, body, "Answer with one letter from A to D.", prompt, "ABCD")
        np.testing.assert_allclose(result.logits[qi], ref, atol=2e-4, rtol=1e-4)
        assert result.question_correct[qi] == (int(np.argmax(ref)) == q.correct.index(True))
    assert result.n_correct == int(result.question_correct.sum())
    assert result.accuracy == pytest.approx(result.n_correct / 6)
    # the plain model (K = 0) goes through the same path; deterministic
    plain = evaluate_culturalbench(lm, easy)
    body = easy.questions[0].question + "\n" + "\n".join(
        f"{L}. {o}" for L, o in zip("ABCD", easy.questions[0].options)) + "\n"
    ref = _reference_logits(lm, body, "Answer with one letter from A to D.", prompt[:0], "ABCD")
    np.testing.assert_allclose(plain.logits[0], ref, atol=2e-4, rtol=1e-4)
    np.testing.assert_array_equal(evaluate_culturalbench(lm, easy).logits, plain.logits)


@pytest.mark.slow
def test_hard_matches_reference_and_all_four_rule(lm, hard, prompt):
    result = evaluate_culturalbench(lm, hard, soft_prompt=prompt)
    assert result.answer_tokens == ("T", "F")  # first tokens of True/False in the tiny tokenizer
    row = 0
    for qi, q in enumerate(hard.questions):
        all_right = True
        for option, label in zip(q.options, q.correct):
            body = f"Question: {q.question}\nProposed answer: {option}\n"
            ref = _reference_logits(lm, body, "Is the proposed answer true or false? Answer with True or False.",
                                    prompt, ("True", "False"))
            np.testing.assert_allclose(result.logits[row], ref, atol=2e-4, rtol=1e-4)
            all_right &= bool((ref[0] > ref[1]) == label)
            row += 1
        assert result.question_correct[qi] == all_right
    assert result.n_judgements == 12


@pytest.mark.slow
@pytest.mark.parametrize("slot", ["user_start", "after_item", "user_end"])
def test_scorer_pass_matches_reference_in_shared_and_item_first_layouts(lm, easy, prompt, slot):
    """The survey scorer's pass (cached: the shared prefix's cache for user_start, each
    judgement's prefix cache for the item-first slots) against the plain one-at-a-time reference,
    with the soft prompt and without (K = 0), in chunks of 4 (one filled with filler rows)."""
    for soft in (prompt, prompt[:0]):
        result = evaluate_culturalbench(lm, easy, soft_prompt=soft if len(soft) else None, slot=slot, batch_size=4)
        for qi, q in enumerate(easy.questions):
            ref = _reference_logits(lm, _easy_body(q), EASY_INSTRUCTION_TEXT, soft, "ABCD", slot=slot)
            np.testing.assert_allclose(result.logits[qi], ref, atol=2e-4, rtol=1e-4)
            assert result.question_correct[qi] == (int(np.argmax(ref)) == q.correct.index(True))


@pytest.mark.slow
def test_chunk_size_mode_and_mesh_change_nothing_but_rounding(lm, hard, prompt):
    from jaxalign import parallel

    whole = evaluate_culturalbench(lm, hard, soft_prompt=prompt, batch_size=None)
    assert whole.n_judgements == 12
    for kwargs in ({"batch_size": 3}, {"batch_size": 5}, {"batch_size": None, "mode": "full"},
                   {"batch_size": 3, "mesh": parallel.make_mesh(1, 1)}):
        other = evaluate_culturalbench(lm, hard, soft_prompt=prompt, **kwargs)
        np.testing.assert_allclose(other.logits, whole.logits, atol=1e-5, rtol=1e-5, err_msg=str(kwargs))
        np.testing.assert_array_equal(other.question_correct, whole.question_correct)
        assert other.n_correct == whole.n_correct
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_culturalbench(lm, hard, batch_size=0)
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate_culturalbench(lm, hard, mode="fast")


def test_judgements_are_prompt_batches_in_few_shapes(lm, easy, hard):
    """Judgements are rendered by prompting's one path, padded to multiples of LENGTH_MULTIPLE,
    and cut into chunks of equal rows sorted by length."""
    from jaxalign.evaluate.culturalbench import LENGTH_MULTIPLE
    from jaxalign.prompting import chunk_items, render_prompts

    for bench in (easy, hard):
        for slot in ("user_start", "after_item"):
            batch = render_judgements(lm.tokenizer, bench, slot=slot)
            assert batch.prompts.prefix_shared == (slot == "user_start")
            assert batch.suffix_ids.shape[1] % LENGTH_MULTIPLE == 0
            assert batch.prompts.answer_order.tolist() == list(range(1, len(batch.answer_ids) + 1))
            assert (batch.prefix_ids is batch.prompts.prefix_ids) and batch.n == bench.n_judgements
            chunks = chunk_items(batch.prompts, 5)
            covered = np.concatenate([indices for indices, _ in chunks])
            assert sorted(covered.tolist()) == list(range(batch.n))  # each judgement once
            lengths = batch.prompts.prefix_lengths + batch.prompts.suffix_lengths
            assert np.all(np.diff(lengths[covered]) >= 0)  # shortest first
            for indices, sub in chunks:
                assert sub.n_items == 5 and sub.suffix_ids.shape[1] % LENGTH_MULTIPLE == 0
                assert sub.item_ids[:len(indices)] == tuple(batch.prompts.item_ids[i] for i in indices)
    one = render_prompts(lm.tokenizer, ["Q?\n"], ["Answer A or B."], ["A", "B"], prompt_ids=["q"])
    assert one.item_ids == ("q",) and one.answer_order.tolist() == [1, 2]
    with pytest.raises(ValueError, match="reserved string"):
        render_prompts(lm.tokenizer, ["<<jaxalign:soft-prompt-slot>>"], ["x"], ["A", "B"], prompt_ids=["q"])


def test_answer_token_errors(lm):
    with pytest.raises(ValueError, match="'Alpha' is not a single token"):
        choice_token_ids(lm.tokenizer, ("Alpha", "Beta"), first_token_ok=False)
    with pytest.raises(ValueError, match="start with the same token"):
        choice_token_ids(lm.tokenizer, ("True", "Tree"), first_token_ok=True)
    with pytest.raises(ValueError, match="has no question to score"):
        render_judgements(lm.tokenizer, BenchSet("easy", (), source="empty"))


@pytest.mark.slow
def test_cli_prints_accuracy_interval_and_count(capsys, prompt, tmp_path):
    from jaxalign.cli import main
    from jaxalign.softprompt import save_soft_prompt

    path = tmp_path / "sp.safetensors"
    save_soft_prompt(path, prompt, {"model": "tiny-random", "slot": "user_start", "system": ""})
    code = main(["eval", "culturalbench", "--soft-prompt", str(path), "--data", str(DATA),
                 "--country", "China", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    easy = out["sets"]["easy"]
    assert easy["naive"]["n_questions"] == 3 and easy["soft prompt"]["n_questions"] == 3
    k = easy["soft prompt"]["n_correct"]
    assert easy["soft prompt"]["ci95"] == pytest.approx(list(wilson_interval(k, 3)))
    code = main(["eval", "culturalbench", "--data", str(DATA), "--set", "hard", "--country", "India"])
    text = capsys.readouterr().out
    assert code == 0 and "CulturalBench-Hard, India: 1 questions (4 sequences)" in text and "95% CI" in text
    assert main(["eval", "culturalbench", "--data", str(DATA), "--country", "Narnia"]) == 2
    assert "no CulturalBench-Easy question about 'Narnia'" in capsys.readouterr().err


def test_hub_download_is_asked_for_the_published_file(monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("repo_type")))
        return str(DATA / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    bench = load_culturalbench(None, set="hard")
    assert calls == [("kellycyy/CulturalBench", "CulturalBench-Hard.csv", "dataset")]
    assert bench.n_questions == 3

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FileNotFoundError, match=r"could not fetch CulturalBench-Easy.csv .*--data PATH"):
        load_culturalbench(None, set="easy")


def test_parquet_needs_pyarrow(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path = _write(tmp_path, "CulturalBench-Easy.parquet", "not really parquet")
        with pytest.raises(ValueError, match="reading parquet needs pyarrow"):
            load_culturalbench(path)
    else:
        import csv

        import pyarrow as pa
        import pyarrow.parquet as pq

        with open(DATA / "CulturalBench-Easy.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "e.parquet")
        assert load_culturalbench(tmp_path / "e.parquet").questions == load_culturalbench(DATA).questions
