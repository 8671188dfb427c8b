"""A tiny, offline, deterministic Llama-3-style tokenizer for tests and the "tiny-random" preset.

``tiny_tokenizer()`` trains a byte-level BPE (``tokenizers`` library) on a small English corpus
written into this module (survey wording about work and private life, answer scales, chat and
persona phrases, country names), then wraps it in a ``transformers`` fast tokenizer with
Llama-3 special tokens and a Llama-3-style chat template. Nothing is downloaded; the build
takes a few tens of milliseconds and is cached per process.

Properties that the rest of jaxalign (and its tests) rely on:

- byte-level: any unicode text encodes without an unknown token and ``decode(encode(text))``
  returns ``text`` exactly;
- the digits ``"0"``..``"9"`` are single tokens, and a digit is always its own pre-token
  (Llama-3 pre-tokenizer regex with single-digit groups), so ``"1"`` after ``"\\n\\n"`` or a
  space still encodes as the one token ``"1"``;
- ``len(tokenizer) == TINY_VOCAB_SIZE`` (1024): 1016 BPE tokens (ids 0..1015) followed by
  eight special tokens (ids 1016..1023), as in Llama 3 where the specials come last;
- ``bos_token = "<|begin_of_text|>"`` (added by ``encode`` with ``add_special_tokens=True``,
  like Llama 3), ``eos_token = "<|eot_id|>"`` (end of a chat turn, as in Llama-3-Instruct),
  ``pad_token = "<|finetune_right_pad_id|>"`` (the Llama-3.1 pad token);
- ``chat_template``: the Llama-3-Instruct layout (see ``LLAMA3_CHAT_TEMPLATE``).
"""

from __future__ import annotations

import functools

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

TINY_VOCAB_SIZE = 1024  # total, special tokens included

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|eot_id|>"  # end of turn: what an instruct model emits last
END_OF_TEXT_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|finetune_right_pad_id|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"

# Appended after the BPE vocabulary, in this order (Llama 3 also puts its specials last).
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS_TOKEN,
    END_OF_TEXT_TOKEN,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    PAD_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOS_TOKEN,
)

# Llama-3 pre-tokenizer pattern, except that numbers split into single digits (Llama 3 uses
# groups of up to three), so every digit is a pre-token of its own.
_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama-3-Instruct layout: BOS once, then per message
# "<|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>", and with
# add_generation_prompt an open assistant header "<|start_header_id|>assistant<|end_header_id|>\n\n".
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# The training corpus: the project's own sentences on the topics the tokenizer must encode
# compactly (survey items and scales, chat and persona text, country names). Any other text
# still encodes, byte by byte where no merge applies.
_CORPUS = """
Picture the job you would most like to have, leaving aside any job you hold at the moment.
When choosing that ideal job, how important would it be to you that it leaves you time?
whom you can respect; good work on your part is recognised; your employment is secure;
the people you work with are pleasant; the work itself is interesting; your boss asks for
your views before making decisions that involve your work; the job lets you live in an area
you find desirable; a job your family and friends hold in high regard; the job offers
opportunities for promotion.
Thinking about your private life rather than your work, how important to you is having free
time set aside for fun and enjoyment? moderation, in the sense of wanting only a few things;
doing a favour for a friend; thrift, in the sense of not spending more money than necessary.
How frequently do you find yourself feeling nervous or tense? How frequently would you say
that you are a happy person? Do you find that other people, or your circumstances, keep you
from doing the things you truly want to do? Taking everything into account, how would you
rate your health at present? How much pride do you take in being a citizen of your country?
From what you have seen, how frequently are employees afraid to disagree openly with their
superior (or students with their teacher)? How far do you agree or disagree with the
following statement? "Someone can be a good manager without being able to give an exact
answer to every question a subordinate brings up about their work." "Steady, persistent
effort is the most reliable way to get results." "Organisations should do everything they
can to avoid structures in which some employees report to two bosses." "Employees should
keep to their organisation's rules, even where they believe that breaking a rule would
benefit the organisation."
extremely important, very important, moderately important, only slightly important,
always, often, sometimes, rarely, never; yes, often; no, rarely; quite proud;
neither agree nor disagree
Answer with a single digit from 1 to 5. Reply with one number only: 1, 2, 3, 4 or 5.
Choose one of the options below and answer with its number.
Options: 1. 2. 3. 4. 5. Answer: Question: Item:
You are a helpful assistant. You are a person from the country named below.
Answer the survey as an average person from that country would.
You are a typical citizen. You live and work in your country and answer honestly.
Imagine you are a respondent in a cross-cultural values survey of employees and students.
The user asks you questions; the assistant answers; the system sets the persona.
system user assistant
Here are some example answers from people of this culture, values, power distance,
individualism, collectivism, masculinity, femininity, uncertainty avoidance,
long term orientation, short term orientation, indulgence, restraint.
Africa East, Africa West, Albania, Algeria, Andorra, Arab countries, Argentina, Armenia,
Australia, Austria, Azerbaijan, Bangladesh, Belarus, Belgium, Bosnia, Brazil, Bulgaria,
Burkina Faso, Canada, Chile, China, Colombia, Costa Rica, Croatia, Cyprus, Czech Republic,
Denmark, Dominican Republic, Ecuador, Egypt, Ethiopia, El Salvador, Estonia, Finland,
France, Georgia, Germany, Ghana, Great Britain, United Kingdom, Greece, Guatemala,
Hong Kong, Hungary, Iceland, India, Indonesia, Iran, Iraq, Ireland, Israel, Italy,
Jamaica, Japan, Jordan, South Korea, Kyrgyz Republic, Latvia, Lithuania, Luxembourg,
North Macedonia, Malaysia, Mali, Malta, Mexico, Moldova, Montenegro, Morocco, Netherlands,
New Zealand, Nigeria, Norway, Pakistan, Panama, Peru, Philippines, Poland, Portugal,
Puerto Rico, Romania, Russia, Rwanda, Saudi Arabia, Serbia, Singapore, Slovakia, Slovenia,
South Africa, Spain, Suriname, Sweden, Switzerland, Taiwan, Tanzania, Thailand,
Trinidad and Tobago, Turkey, United States, the United States of America, USA, U.S.A.,
Uganda, Ukraine, Uruguay, Venezuela, Vietnam, Zambia, Zimbabwe.
American, Chinese, Indian, Saudi, Arab, German, Japanese, French, British, Brazilian.
The quick brown fox jumps over the lazy dog. What is your answer? I think that it is
important. It was the best of times; it was not the worst. They would not say why.
Which of these is true? The answer is correct. This is a question about culture.
"""


@functools.lru_cache(maxsize=1)
def _trained_backend() -> Tokenizer:
    """The trained `tokenizers.Tokenizer` (byte-level BPE + Llama-3 specials), built once."""
    backend = Tokenizer(models.BPE())  # byte-level: no unk token needed
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - len(SPECIAL_TOKENS),
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # The corpus, plus the text a chat template puts around messages (role names and the
    # blank line after each header), so those become single tokens too.
    chat_frames = [f"{role}\n\n" for role in ("system", "user", "assistant")] * 4
    backend.train_from_iterator([_CORPUS, *chat_frames], trainer=trainer)
    n_bpe = backend.get_vocab_size()
    if n_bpe != TINY_VOCAB_SIZE - len(SPECIAL_TOKENS):
        raise RuntimeError(
            f"tiny tokenizer: BPE training produced {n_bpe} tokens, expected "
            f"{TINY_VOCAB_SIZE - len(SPECIAL_TOKENS)}; the built-in corpus is too small"
        )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN}:0 $A:0",
        pair=f"{BOS_TOKEN}:0 $A:0 {BOS_TOKEN}:1 $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return backend


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small Llama-3-style tokenizer, built offline and deterministically (< 1 s).

    Returns a fresh ``transformers`` fast tokenizer on every call (so callers may change
    attributes such as ``padding_side`` freely); the trained BPE behind it is built once per
    process. ``len(tokenizer) == 1024``; see the module docstring for the guarantees.

    Example::

        tok = tiny_tokenizer()
        text = tok.apply_chat_template(
            [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
        )
        # '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHello<|eot_id|>'
        # '<|start_header_id|>assistant<|end_header_id|>\\n\\n'
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_trained_backend(),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
        padding_side="right",
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer

