"""CulturalBench (Chiu et al. 2024, CC-BY-4.0): cultural knowledge with and without a soft prompt.

The benchmark (Hub dataset ``kellycyy/CulturalBench``) asks the same questions in two ways:

- **Easy** (``CulturalBench-Easy.csv``): four-option multiple choice. Columns ``question_idx,
  prompt_question, prompt_option_a, prompt_option_b, prompt_option_c, prompt_option_d, answer``
  (a letter A-D) and ``country``. A question is right when the letter with the highest logit is
  the answer.
- **Hard** (``CulturalBench-Hard.csv``): one row per (question, option) with columns
  ``question_idx, prompt_question, prompt_option, answer`` (``True``/``False``: is this option a
  right answer?) and ``country``; a question has (usually four) rows sharing ``question_idx``.
  Each row is one true/false judgement; a question counts as right only when **all** of its
  judgements are right.

Scoring is the survey's, through the same code: every judgement is a prompt rendered by
:func:`jaxalign.prompting.render_prompts` with the model's chat template, split at the soft-prompt
slot (the same slot as for the survey) into ``[prefix][K soft vectors][suffix]``, and the answer is
read from the logits of the answer tokens at the last position (letters ``A``..``D`` for Easy,
``True``/``False`` for Hard), never by generating text. The logits come from the survey scorer's
pass (:func:`jaxalign.scoring_pass.answer_logits`: key/value caches of the shared prefix in
``mode="cached"``, optional mesh) with the soft prompt as a population of one. Judgements are
sorted by length and scored in chunks of ``batch_size`` (default :data:`DEFAULT_BATCH_SIZE`;
``None``: all in one pass), each padded to its own longest judgement rounded up to
:data:`LENGTH_MULTIPLE`, one jitted pass per chunk: memory does not grow with the set, and the
compiles are as few as the distinct rounded lengths. Nothing is random: the same inputs give the
same result.

Answer tokens are the tokens the model writes first in its assistant turn
(:func:`choice_spelling`, the survey digits' rule): after a prompt ending in whitespace (Llama 3's
``"\\n\\n"``), the answer as it continues the prompt; after ``"[/INST]"`` (Mistral, Llama 2), the
answer as a new SentencePiece segment, ``"▁A"`` for a letter, and for a word the tokenizer splits
into ``"▁"``, ``"T"``, ... the ``"▁"`` is appended to every prompt and ``"T"`` is read after it.
Easy's letters must each be one token (a clear error otherwise). ``True``/``False`` are one token
each for Llama 3; for a tokenizer that splits them (the tiny test tokenizer reads ``T``/``F``
first) the first token of each is read, which is what the model would emit first, as long as
the two differ.

Accuracy is reported with a 95% Wilson score interval (:func:`wilson_interval`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxalign import parallel
from jaxalign.prompting import PromptBatch, chunk_items, render_prompts
from jaxalign.prompting.answers import AnswerSpelling, answer_spelling
from jaxalign.prompting.layout import check_slot
from jaxalign.scoring import resolve_mode
from jaxalign.scoring_pass import ItemBucket, answer_logits_jit

CULTURALBENCH_REPO = "kellycyy/CulturalBench"
CULTURALBENCH_CITATION = (
    "Chiu et al. (2024), CulturalBench: a Robust, Diverse and Challenging Benchmark on "
    "Measuring the (Lack of) Cultural Knowledge of LLMs, arXiv:2410.02677; data CC-BY-4.0"
)
SETS: tuple[str, ...] = ("easy", "hard")
SET_FILES: dict[str, str] = {"easy": "CulturalBench-Easy.csv", "hard": "CulturalBench-Hard.csv"}
EASY_COLUMNS: tuple[str, ...] = (
    "question_idx", "prompt_question", "prompt_option_a", "prompt_option_b",
    "prompt_option_c", "prompt_option_d", "answer", "country",
)
HARD_COLUMNS: tuple[str, ...] = ("question_idx", "prompt_question", "prompt_option", "answer", "country")
LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
TRUE_FALSE: tuple[str, ...] = ("True", "False")
Z_95 = 1.959963984540054  # two-sided 95% normal quantile

EASY_INSTRUCTION = "Answer with one letter from A to D."
HARD_INSTRUCTION = "Is the proposed answer true or false? Answer with True or False."
DEFAULT_BATCH_SIZE = 64  # judgements per forward pass: bounds memory on the real sets (Hard: ~4,900)
LENGTH_MULTIPLE = 16  # padded lengths are multiples of it: few distinct chunk shapes, few compiles


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class BenchQuestion:
    """One CulturalBench question.

    Attributes:
      question_idx: the dataset's question id (as text).
      country: the country or region the question is about.
      question: the question text.
      options: the answer options (four for Easy; the options judged, usually four, for Hard).
      correct: one flag per option: Easy has exactly one True (the answer letter); Hard has the
        dataset's true/false label of each option.
    """

    question_idx: str
    country: str
    question: str
    options: tuple[str, ...]
    correct: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class BenchSet:
    """The questions of one CulturalBench set (``"easy"`` or ``"hard"``).

    Attributes:
      name: ``"easy"`` or ``"hard"``.
      questions: the questions, in file order.
      source: where they were read from.
      skipped: questions left out because a required value was empty.
    """

    name: str
    questions: tuple[BenchQuestion, ...]
    source: str
    skipped: int = 0

    @property
    def n_questions(self) -> int:
        return len(self.questions)

    @property
    def n_judgements(self) -> int:
        """Sequences scored: one per question for Easy, one per option for Hard."""
        if self.name == "easy":
            return len(self.questions)
        return sum(len(q.options) for q in self.questions)

    def countries(self) -> list[str]:
        """The distinct countries, sorted."""
        return sorted({q.country for q in self.questions})

    def for_country(self, country: str | None) -> "BenchSet":
        """The questions about ``country`` (case-insensitive); ``None`` or ``"all"`` keeps all.

        A name the benchmark does not use matches the benchmark's names for the same survey
        country (:func:`jaxalign.resolve_target`): ``"U.S.A."`` selects ``"United States"``.
        Raises ValueError listing the available countries when none matches.
        """
        if country is None or country.strip().lower() == "all":
            return self
        wanted = " ".join(country.split()).lower()
        kept = tuple(q for q in self.questions if q.country.lower() == wanted)
        if not kept and (code := _survey_code(country)) is not None:  # the survey's name for it
            same = {name for name in self.countries() if _survey_code(name) == code}
            kept = tuple(q for q in self.questions if q.country in same)
        if not kept:
            raise ValueError(
                f"no CulturalBench-{self.name.title()} question about {country!r} in {self.source}; "
                f"countries there: {', '.join(self.countries())}"
            )
        return dataclasses.replace(self, questions=kept)


def _survey_code(name: str) -> str | None:
    """The VSM country code that ``name`` resolves to, or ``None`` when it names no survey country."""
    from jaxalign.survey import resolve_target

    try:
        return resolve_target(name).code
    except ValueError:
        return None


def load_culturalbench(
    source: str | os.PathLike | None = None,
    *,
    set: str = "easy",  # noqa: A002 - the benchmark's own word
    cache_dir: str | os.PathLike | None = None,
) -> BenchSet:
    """Reads CulturalBench-Easy or -Hard from a local file or folder, or from the Hub.

    Args:
      source: a ``.csv``, ``.jsonl``, ``.json`` (a list of row objects) or ``.parquet`` (needs
        pyarrow) file in the published column format; or a folder holding
        ``CulturalBench-Easy.csv`` / ``CulturalBench-Hard.csv``; or ``None`` to download that
        file from the Hub dataset ``kellycyy/CulturalBench`` (needs network access).
      set: ``"easy"`` or ``"hard"``.
      cache_dir: Hub cache folder (``None``: huggingface_hub's default).

    Returns:
      A :class:`BenchSet`. Extra columns are ignored.

    Raises:
      FileNotFoundError: no such file, or the folder lacks the set's file.
      ValueError: a required column is missing, or a value is malformed (the message names the
        file, the row and the field).
    """
    name = str(set).strip().lower()
    if name not in SETS:
        raise ValueError(f"unknown CulturalBench set {set!r}; choose 'easy' or 'hard'")
    path = _resolve_source(source, name, cache_dir)
    rows = _read_rows(path)
    if name == "easy":
        questions, skipped = _parse_easy(rows, path.name)
    else:
        questions, skipped = _parse_hard(rows, path.name)
    return BenchSet(name=name, questions=tuple(questions), source=str(path), skipped=skipped)


def _resolve_source(source: Any, name: str, cache_dir: Any) -> Path:
    filename = SET_FILES[name]
    if source is None:
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(CULTURALBENCH_REPO, filename, repo_type="dataset",
                                        cache_dir=cache_dir))
        except Exception as error:  # offline, no such file, hub errors of any kind
            raise FileNotFoundError(
                f"could not fetch {filename} from the Hub dataset {CULTURALBENCH_REPO} "
                f"({type(error).__name__}: {error}); download it and pass its path (--data PATH)"
            ) from None
    path = Path(source)
    if path.is_dir():
        for candidate in (filename, *(Path(filename).with_suffix(s).name for s in (".jsonl", ".json", ".parquet"))):
            if (path / candidate).is_file():
                return path / candidate
        raise FileNotFoundError(f"folder {str(path)!r} holds no {filename} (or .jsonl/.json/.parquet)")
    if not path.is_file():
        raise FileNotFoundError(f"no CulturalBench file at {str(path)!r}")
    return path


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)`` of a CSV/JSONL/JSON/parquet table."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path.name}: reading parquet needs pyarrow; install it or use the CSV file") from None
        table = pq.read_table(path)
        return list(table.column_names), table.to_pylist()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path.name}: not UTF-8 text ({error})") from None
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = list(reader.fieldnames or [])
        return columns, list(reader)
    if suffix in (".jsonl", ".json"):
        try:
            if suffix == ".jsonl":
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name}: not valid JSON ({error})") from None
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise ValueError(f"{path.name}: expected a list of row objects (one per CSV row)")
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        return columns, [dict(r) for r in rows]
    raise ValueError(f"{path.name}: unsupported file type {suffix!r}; use .csv, .jsonl, .json or .parquet")


def _check_columns(columns: Sequence[str], required: Sequence[str], source: str, set_name: str) -> None:
    missing = [c for c in required if c not in columns]
    if not missing:
        return
    hint = ""
    if set_name == "hard" and "prompt_option_a" in columns:
        hint = " (this looks like CulturalBench-Easy; use --set easy)"
    elif set_name == "easy" and "prompt_option" in columns:
        hint = " (this looks like CulturalBench-Hard; use --set hard)"
    raise ValueError(
        f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} for "
        f"CulturalBench-{set_name.title()}{hint}; expected columns: {', '.join(required)}"
    )


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _parse_easy(table: tuple[list[str], list[dict]], source: str) -> tuple[list[BenchQuestion], int]:
    columns, rows = table
    _check_columns(columns, EASY_COLUMNS, source, "easy")
    questions, skipped = [], 0
    for line, row in enumerate(rows, start=2):  # line 1 is the CSV header
        values = {c: _text(row.get(c)) for c in EASY_COLUMNS}
        if any(not v for v in values.values()):
            skipped += 1
            continue
        answer = values["answer"].upper()
        if answer not in LETTERS:
            raise ValueError(
                f"{source}: row {line} (question_idx {values['question_idx']}): field 'answer' "
                f"must be one of A, B, C, D, got {values['answer']!r}"
            )
        questions.append(BenchQuestion(
            question_idx=values["question_idx"],
            country=values["country"],
            question=values["prompt_question"],
            options=tuple(values[f"prompt_option_{c}"] for c in "abcd"),
            correct=tuple(letter == answer for letter in LETTERS),
        ))
    return questions, skipped


def _truth(value: Any, source: str, line: int, question_idx: str) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(
        f"{source}: row {line} (question_idx {question_idx}): field 'answer' must be True or "
        f"False, got {value!r}"
    )


def _parse_hard(table: tuple[list[str], list[dict]], source: str) -> tuple[list[BenchQuestion], int]:
    columns, rows = table
    _check_columns(columns, HARD_COLUMNS, source, "hard")
    grouped: dict[str, dict[str, Any]] = {}
    incomplete: set[str] = set()
    for line, row in enumerate(rows, start=2):
        values = {c: _text(row.get(c)) for c in HARD_COLUMNS if c != "answer"}
        qid = values["question_idx"]
        if not qid:
            raise ValueError(f"{source}: row {line}: field 'question_idx' is empty")
        raw_answer = row.get("answer")
        if any(not v for v in values.values()) or _text(raw_answer) == "":
            incomplete.add(qid)
            continue
        label = _truth(raw_answer, source, line, qid)
        group = grouped.setdefault(qid, {"question": values["prompt_question"],
                                         "country": values["country"], "options": [], "correct": []})
        for field, key in (("prompt_question", "question"), ("country", "country")):
            if values[field] != group[key]:
                raise ValueError(
                    f"{source}: row {line}: field {field!r} differs between rows of question_idx "
                    f"{qid} ({group[key]!r} vs {values[field]!r})"
                )
        group["options"].append(values["prompt_option"])
        group["correct"].append(label)
    questions = [
        BenchQuestion(qid, g["country"], g["question"], tuple(g["options"]), tuple(g["correct"]))
        for qid, g in grouped.items() if qid not in incomplete
    ]
    return questions, len(incomplete)


# ----------------------------------------------------------------------------- statistics
def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n`` (default 95%).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``; ``(nan, nan)`` when ``n == 0``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


# ----------------------------------------------------------------------------- prompts
@dataclasses.dataclass(frozen=True, eq=False)
class JudgementBatch:
    """All judgements of a :class:`BenchSet`, rendered: a :class:`PromptBatch` and what each row judges.

    Attributes:
      prompts: the ``N`` judgements as token ids split at the soft-prompt slot
        (:func:`jaxalign.prompting.render_prompts`): ``prefix_ids``/``prefix_mask`` ``(N, Tp)``
        left-padded, ``suffix_ids``/``suffix_mask`` ``(N, Ts)`` right-padded, ``answer_ids (n,)``
        int32 (A-D, or True/False) read at the last position, ``answer_order`` ``1..n``; these
        five arrays are also attributes of the judgement batch itself.
      answer_tokens: the token strings of ``answer_ids``.
      question_of: ``(N,)`` int32, the question (index into the set) of each judgement.
      option_of: ``(N,)`` int32, the option judged (Hard) or -1 (Easy).
    """

    prompts: PromptBatch
    answer_tokens: tuple[str, ...]
    question_of: np.ndarray
    option_of: np.ndarray

    @property
    def n(self) -> int:
        return self.prompts.n_items

    prefix_ids = property(lambda self: self.prompts.prefix_ids, doc="``(N, Tp)`` int32, left-padded.")
    prefix_mask = property(lambda self: self.prompts.prefix_mask, doc="``(N, Tp)`` int32.")
    suffix_ids = property(lambda self: self.prompts.suffix_ids, doc="``(N, Ts)`` int32, right-padded.")
    suffix_mask = property(lambda self: self.prompts.suffix_mask, doc="``(N, Ts)`` int32.")
    answer_ids = property(lambda self: self.prompts.answer_ids, doc="``(n,)`` int32, the ids read.")


def judgement_bodies(bench: BenchSet) -> list[tuple[str, str, int, int]]:
    """``(body, instruction, question index, option index)`` of every judgement, in order.

    Easy: ``"{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\n"`` and :data:`EASY_INSTRUCTION`.
    Hard: ``"Question: {question}\\nProposed answer: {option}\\n"`` and :data:`HARD_INSTRUCTION`.
    """
    out = []
    for qi, q in enumerate(bench.questions):
        if bench.name == "easy":
            lines = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, q.options))
            out.append((f"{q.question}\n{lines}\n", EASY_INSTRUCTION, qi, -1))
        else:
            for oi, option in enumerate(q.options):
                out.append((f"Question: {q.question}\nProposed answer: {option}\n", HARD_INSTRUCTION, qi, oi))
    return out




def choice_token_ids(
    tokenizer: Any, answers: Sequence[str], *, first_token_ok: bool, chat_template: str | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Token ids of ``answers`` as the model would write them first in its turn.

    :func:`choice_spelling`'s ids and their token strings (read after its lead, if any).

    Returns:
      ``(ids (n,) int32, token strings)``.

    Raises:
      ValueError: naming the answer that is not a single token, or the clash.
    """
    spelling = choice_spelling(tokenizer, answers, first_token_ok=first_token_ok, chat_template=chat_template)
    return spelling.ids, tuple(tokenizer.convert_ids_to_tokens(spelling.ids.tolist()))


# how CulturalBench spells its answers (on top of answer_spelling's rule; see choice_spelling)
_SPELLING: dict[str, Any] = {"own_when_merged": True, "reader": "CulturalBench scoring reads single-token answers"}


def choice_spelling(
    tokenizer: Any, answers: Sequence[str], *, first_token_ok: bool, chat_template: str | None = None,
) -> AnswerSpelling:
    """How the model writes ``answers`` first in its turn (lead tokens, then the id read).

    The survey digits' rule (:func:`jaxalign.prompting.answers.answer_spelling`), rendered with the
    same template as the questions (``chat_template``, default the tokenizer's own): after a
    prompt ending in whitespace, the tokens the answer adds there, or, when the answer would merge
    with the prompt's last token (the ``plain`` template's ``"Answer: "`` before a byte-level BPE
    letter), the answer's own tokens, since the prompt's tokens are fixed; after a prompt ending
    in markup (``"[/INST]"``), the answer's own tokens, word marker included: a SentencePiece
    model writes the letter ``"▁A"`` (one token) there, and a word it splits (``"▁"``, ``"T"``,
    ...) after the shared ``"▁"`` lead, which :func:`render_judgements` appends to the prompt.
    Each answer must be one token after the lead (or, with ``first_token_ok``, its first token
    is used), and the ids must be distinct.
    """
    return answer_spelling(tokenizer, answers, chat_template=chat_template, first_token_ok=first_token_ok,
                           **_SPELLING)


def render_judgements(
    tokenizer: Any, bench: BenchSet, *, system: str | None = None, slot: str = "user_start",
    chat_template: str | None = None, pad_to_multiple: int = LENGTH_MULTIPLE,
) -> JudgementBatch:
    """Renders every judgement of ``bench`` with the chat template, split at the soft-prompt slot.

    The survey's rendering (:func:`jaxalign.prompting.render_prompts`) of the bodies and
    instructions of :func:`judgement_bodies`, answers spelled by :func:`choice_spelling`'s rule.
    ``pad_to_multiple`` (default :data:`LENGTH_MULTIPLE`): padded lengths are multiples of it,
    so the chunks :func:`choice_logits` scores share few distinct shapes.
    """
    check_slot(slot)
    if bench.n_questions == 0:
        raise ValueError(f"CulturalBench-{bench.name.title()} from {bench.source} has no question to score")
    bodies = judgement_bodies(bench)
    ids = [bench.questions[qi].question_idx + ("" if oi < 0 else f"/{oi}") for _, _, qi, oi in bodies]
    prompts = render_prompts(
        tokenizer, [b[0] for b in bodies], [b[1] for b in bodies], LETTERS if bench.name == "easy" else TRUE_FALSE,
        prompt_ids=ids, system=system, slot=slot, pad_to_multiple=pad_to_multiple, chat_template=chat_template,
        first_token_ok=bench.name == "hard", **_SPELLING,
    )
    return JudgementBatch(
        prompts=prompts,
        answer_tokens=tuple(tokenizer.convert_ids_to_tokens(prompts.answer_ids.tolist())),
        question_of=np.asarray([b[2] for b in bodies], np.int32),
        option_of=np.asarray([b[3] for b in bodies], np.int32),
    )


# ----------------------------------------------------------------------------- scoring
def choice_logits(
    lm: Any, batch: JudgementBatch, soft_prompt: Any = None, *, batch_size: int | None = None,
    mode: str = "auto", mesh: Any = None, trim_last_layer: bool = True,
) -> np.ndarray:
    """Answer logits ``(N, n)`` float32 of every judgement, with ``soft_prompt (K, d)`` at the slot.

    The survey scorer's logits pass (:func:`jaxalign.scoring_pass.answer_logits`) with the soft
    prompt as a population of one (``None``: ``K = 0``, the plain model). The judgements are
    sorted by length and cut into chunks of ``batch_size`` (:func:`jaxalign.prompting.chunk_items`;
    ``None``: one chunk of all ``N``), each trimmed to its own longest judgement rounded up to the
    batch's ``pad_to_multiple``; the last chunk is filled with copies of one of its rows, whose
    results are dropped. One jitted pass per chunk: peak memory is bounded by ``batch_size`` and
    the number of compiles by the distinct rounded lengths.

    Args:
      mode: ``"auto"`` (:func:`jaxalign.scoring.resolve_mode`: ``"cached"``: the shared prefix of
        the default ``user_start`` layout computed once per chunk, or each judgement's prefix once
        in an item-first layout), ``"cached"`` or ``"full"`` (every sequence run whole).
      mesh: a :class:`jax.sharding.Mesh`: weights sharded over its ``"model"`` axis (kept if
        ``load_model(..., mesh=mesh)`` placed them); the one member is not split over ``"data"``.
      trim_last_layer: as for :func:`jaxalign.scoring.make_scorer`.

    The logits do not depend on ``batch_size``, ``mode`` or ``trim_last_layer`` beyond float rounding.
    """
    d = lm.config.hidden_size
    prompt = np.zeros((0, d), np.float32) if soft_prompt is None else np.asarray(soft_prompt, np.float32)
    if prompt.ndim != 2 or prompt.shape[1] != d:
        raise ValueError(f"soft prompt must have shape (K, {d}), got {prompt.shape}")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mode = resolve_mode(mode, bool(batch.prompts.prefix_shared))
    params, prompts, answer_ids = lm.params, jnp.asarray(prompt[None]), jnp.asarray(batch.answer_ids, jnp.int32)
    if mesh is not None:
        parallel.check_model_divisible(lm.config, mesh)
        params = parallel.place_params(params, mesh)
        prompts, answer_ids = parallel.replicate((prompts, answer_ids), mesh)
    out = np.zeros((batch.n, answer_ids.shape[0]), np.float32)
    for indices, chunk in chunk_items(batch.prompts, None if batch_size is None else int(batch_size)):
        bucket = ItemBucket.of(np.arange(chunk.n_items), chunk)
        if mesh is not None:
            bucket = parallel.replicate(bucket, mesh)
        logits = answer_logits_jit(lm.graphdef, params, (bucket,), answer_ids, prompts, mode=mode, mesh=mesh,
                                   trim_last_layer=bool(trim_last_layer))      # (1, size, n)
        out[indices] = np.asarray(logits)[0, :len(indices)]
    return out


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """CulturalBench accuracy of one prompt on one set.

    Attributes:
      set: ``"easy"`` or ``"hard"``.
      n_questions, n_correct: questions scored and answered right.
      n_judgements: sequences scored (Easy: one per question; Hard: one per option).
      accuracy: ``n_correct / n_questions``; ``ci95``: its 95% Wilson interval.
      per_country: country -> ``(n_correct, n_questions)``.
      question_correct: ``(n_questions,)`` bool.
      logits: ``(n_judgements, n)`` answer logits (A-D, or True/False).
      answer_tokens: the tokens read.
      skipped: questions of the file left out for an empty value.
    """

    set: str
    n_questions: int
    n_correct: int
    n_judgements: int
    accuracy: float
    ci95: tuple[float, float]
    per_country: dict[str, tuple[int, int]]
    question_correct: np.ndarray
    logits: np.ndarray
    answer_tokens: tuple[str, ...]
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "n_questions": self.n_questions,
            "n_correct": self.n_correct,
            "n_judgements": self.n_judgements,
            "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
            "ci95": [None if math.isnan(v) else v for v in self.ci95],
            "per_country": {c: {"correct": k, "questions": n} for c, (k, n) in self.per_country.items()},
            "answer_tokens": list(self.answer_tokens),
            "skipped": self.skipped,
        }


def grade(bench: BenchSet, batch: JudgementBatch, logits: np.ndarray) -> BenchResult:
    """Turns answer logits ``(N, n)`` into per-question correctness and accuracy.

    Easy: the chosen option is ``argmax`` over A-D. Hard: a judgement says True when the
    ``True`` logit exceeds the ``False`` logit; a question is right when all its judgements are.
    """
    logits = np.asarray(logits, np.float32)
    n_q = bench.n_questions
    if bench.name == "easy":
        chosen = np.argmax(logits, axis=-1)  # (N,) == (Q,)
        truth = np.asarray([q.correct.index(True) for q in bench.questions])
        question_correct = chosen == truth  # one judgement per question, in order
    else:
        says_true = logits[:, 0] > logits[:, 1]  # (N,)
        labels = np.asarray([bench.questions[q].correct[o] for q, o in zip(batch.question_of, batch.option_of)])
        right = says_true == labels
        question_correct = np.ones(n_q, bool)
        np.logical_and.at(question_correct, batch.question_of, right)
    n_correct = int(question_correct.sum())
    per_country: dict[str, tuple[int, int]] = {}
    for q, ok in zip(bench.questions, question_correct):
        k, n = per_country.get(q.country, (0, 0))
        per_country[q.country] = (k + int(ok), n + 1)
    return BenchResult(
        set=bench.name,
        n_questions=n_q,
        n_correct=n_correct,
        n_judgements=batch.n,
        accuracy=n_correct / n_q if n_q else math.nan,
        ci95=wilson_interval(n_correct, n_q),
        per_country=dict(sorted(per_country.items())),
        question_correct=question_correct,
        logits=logits,
        answer_tokens=batch.answer_tokens,
        skipped=bench.skipped,
    )


def evaluate_culturalbench(
    lm: Any,
    bench: BenchSet,
    *,
    soft_prompt: Any = None,
    system: str | None = None,
    slot: str = "user_start",
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    mode: str = "auto",
    mesh: Any = None,
) -> BenchResult:
    """CulturalBench accuracy of ``lm`` with an optional soft prompt ``(K, d)`` and system text.

    Args:
      lm: the model with its tokenizer.
      bench: questions from :func:`load_culturalbench` (``.for_country(...)`` to select).
      soft_prompt: ``(K, d)`` array, or ``None`` for the plain model.
      system: optional system text (e.g. the one the soft prompt was tuned with).
      slot: where the soft vectors go, as for the survey.
      batch_size: sequences per forward pass (:data:`DEFAULT_BATCH_SIZE`, so that memory does not
        grow with the set; ``None``: all at once). Accuracies do not depend on it beyond float
        rounding.
      mode, mesh: as for :func:`choice_logits`.
    """
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer")
    batch = render_judgements(lm.tokenizer, bench, system=system, slot=slot)
    return grade(bench, batch, choice_logits(lm, batch, soft_prompt, batch_size=batch_size, mode=mode, mesh=mesh))
