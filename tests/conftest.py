"""Shared fixtures: the tiny model and real tokenizers (built offline, see tests/real_tokenizers.py),
once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# JAX's persistent compilation cache, shared by every test module and by the subprocesses tests
# start (they inherit the environment): many modules compile the same tiny-model programs, and a
# hit loads one in milliseconds instead of seconds. Set JAX_COMPILATION_CACHE_DIR yourself to
# move it; delete the folder to time cold compiles.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "jaxalign-tests" / "jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _weights_digest(lm) -> str:
    import hashlib

    import jax
    import numpy as np

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(lm.params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def lm():
    """The tiny random model (``load_model("tiny-random", dtype="float32")``), loaded once per test
    process and shared by every module that asks for ``lm`` (a module needing another dtype or
    model defines its own ``lm``, which wins). ``LM`` is a frozen dataclass; no test may change its
    weights in place: a test that needs broken weights loads its own copy. Checked at the end: the
    weights' digest must be the one they had when loaded."""
    import jaxalign

    model = jaxalign.load_model("tiny-random", dtype="float32")
    before = _weights_digest(model)
    yield model
    assert _weights_digest(model) == before, "a test changed the shared tiny model's weights in place"


@pytest.fixture(scope="session")
def llama3_tokenizer_dir():
    """Folder with Llama-3's 128,256-id tokenizer (no chat template), cached on disk."""
    pytest.importorskip("tiktoken")
    pytest.importorskip("quicktok")
    from real_tokenizers import llama3_tokenizer_folder

    return llama3_tokenizer_folder()


@pytest.fixture(scope="session")
def qwen25_tokenizer_dir():
    """Folder with Qwen2.5's tokenizer (151,643 ranks + added tokens), cached on disk."""
    pytest.importorskip("tiktoken")
    pytest.importorskip("quicktok")
    from real_tokenizers import qwen25_tokenizer_folder

    return qwen25_tokenizer_folder()


@pytest.fixture(scope="session")
def sentencepiece_tokenizer_dir():
    """Folder with a Llama-2-style SentencePiece tokenizer trained at test time (400 pieces)."""
    pytest.importorskip("sentencepiece")
    from real_tokenizers import sentencepiece_tokenizer_folder

    return sentencepiece_tokenizer_folder()


@pytest.fixture(scope="session")
def real_tokenizer():
    """``get(family, chat_template=True)``: the family's transformers tokenizer (llama3, llama3.1,
    llama3.2, qwen2.5, mistral, llama2), loaded once per vocabulary per session; each call returns
    a shallow copy carrying the family's Instruct chat format (or none)."""
    pytest.importorskip("tiktoken")
    pytest.importorskip("quicktok")
    pytest.importorskip("sentencepiece")
    import copy

    import transformers
    from real_tokenizers import FAMILY_TOKENIZERS

    from jaxalign.prompting.chat_formats import CHAT_FORMATS

    loaded: dict[object, object] = {}

    def get(family: str, chat_template: bool = True):
        build, format_name = FAMILY_TOKENIZERS[family]
        if build not in loaded:
            loaded[build] = transformers.AutoTokenizer.from_pretrained(build())
        tok = copy.copy(loaded[build])
        tok.chat_template = CHAT_FORMATS[format_name].template if chat_template and format_name else None
        return tok

    return get


# -- scheduling on several workers (`pytest -n 2 --dist loadfile`, the README's command) ---------
# xdist hands out whole modules; by default it sends those with the most tests first, which left
# a long single-test module (the optimizer study, the two-process runs) running alone at the end.
# Longest first instead: the modules below, by measured seconds (benchmarks/results/
# test_suite_times_*.txt), then the rest in their usual order. A wrong or stale list changes only
# the order, never what runs.
SLOWEST_MODULES = (
    "test_real_checkpoints.py", "test_optimizers.py", "test_multiprocess.py", "test_smollm2.py", "test_many_targets.py",
    "test_align.py", "test_sharding.py", "test_quantize.py", "test_notebooks.py", "test_optimizers_benchmark.py",
    "test_scoring.py", "test_benchmarks.py", "test_interrupt.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist installed
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module kept


# -- one module's compiled programs at a time ---------------------------------------------------
# Every XLA:CPU executable a process holds keeps its code in many small memory mappings (thousands
# per test module here), and jit caches hold executables for the life of the process (jaxalign
# shares one scoring pass and one optimizer loop per setting on purpose). A test worker runs half
# the suite in one process; measured on 2026-12-02, four slow modules run in one process ended
# with 30,259 mappings. Linux refuses mappings past vm.max_map_count (65,530 by default), and
# loading the next executable then kills the process: three whole-suite runs on 2026-12-01/02 lost
# a worker to a segmentation fault inside jaxlib's deserialize_executable, and with the limit
# lowered to 12,000 the same two modules in one process aborted there ("allocateMappedMemory
# failed"). So each module's compiled programs are dropped when it ends (the same modules then
# stayed under 760 mappings between modules and passed under the 12,000 limit; 150.4 s against
# 149.5 s without); the persistent compilation cache on disk is kept.
@pytest.fixture(scope="module", autouse=True)
def _drop_compiled_programs_after_each_module():
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
