"""Chat formats by name, and one fixed date per run for formats that read today's date.

A chat format is a Jinja chat template (what ``tokenizer.apply_chat_template`` renders). The
checkpoint's own template is used by default; ``--chat-template NAME|FILE`` (or
:func:`with_chat_format`) replaces it by one of :data:`CHAT_FORMATS` or a Jinja file:

=============  ==========================================================================
``plain``      no chat markup, for base models: ``{bos}{system}\\n\\n{user}\\nAnswer: ``
``llama3``     Llama-3-Instruct: ``<|begin_of_text|>`` then per message
               ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``;
               generation prompt: the assistant header and ``"\\n\\n"``
``llama3.1``   Llama-3.1-Instruct: always a system turn that starts ``"Cutting Knowledge Date:
               December 2023\\nToday Date: {date_string}\\n\\n"`` (``date_string`` defaults to
               ``"26 Jul 2024"``), followed by the user's system text
``llama3.2``   Llama-3.2-Instruct: as 3.1, but the date is ``strftime_now("%d %b %Y")`` (today)
               when the renderer provides ``strftime_now`` (transformers does)
``qwen2.5``    Qwen2.5-Instruct, ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; when the
               conversation has no system message, the system message "You are Qwen, created by
               Alibaba Cloud. You are a helpful assistant." is inserted; generation prompt
               ``<|im_start|>assistant\\n``
``mistral``    Mistral-Instruct (v0.1/v0.2 layout): ``<s>[INST] {user} [/INST]{answer}</s>``;
               a system message, which that template refuses, is written before the first user
               text as ``{system}\\n\\n{user}`` (the layout Mistral's v0.3 template uses)
=============  ==========================================================================

These templates are written here from the published formats' rules (they render the same
token sequences as the published templates for system/user/assistant conversations without
tools; ``tests/test_chat_formats.py`` checks each token for token); the Llama and Qwen
templates trim nothing beyond what the published ones trim (Llama trims every message, Qwen
and Mistral none).

**Dates.** A template that calls ``strftime_now`` (Llama-3.2's) writes today's date, so the same
run rendered another day would give other tokens. jaxalign therefore renders such a template
with ONE fixed date per run: :func:`with_chat_format` binds a date (``YYYY-MM-DD``; chosen at
the start of a run, recorded in ``results.json`` and the soft prompt's metadata, reused on
resume and when a saved prompt is scored or evaluated) and renders the template behind a
``strftime_now`` macro that formats that date instead of the clock (:func:`date_prelude`). ``date_string`` (Llama-3.1's variable) is left to the template's
own default, exactly as ``apply_chat_template`` does, so 3.1 always writes "26 Jul 2024".
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxalign.prompting.layout import PLAIN_CHAT_TEMPLATE

# ---------------------------------------------------------------------------------- templates
_LLAMA3_TURNS = (
    "{%- for message in loop_messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set loop_messages = messages %}"
    + _LLAMA3_TURNS
)


def _llama3x_template(date_rule: str) -> str:
    """Llama-3.1/3.2: a system turn with the knowledge and today's dates, always written."""
    return (
        "{{- bos_token }}"
        + date_rule
        + "{%- if messages and messages[0]['role'] == 'system' %}"
        "{%- set system_text = messages[0]['content'] | trim %}{%- set loop_messages = messages[1:] %}"
        "{%- else %}{%- set system_text = '' %}{%- set loop_messages = messages %}{%- endif %}"
        "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
        "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' }}"
        "{{- system_text + '<|eot_id|>' }}"
        + _LLAMA3_TURNS
    )


LLAMA31_TEMPLATE = _llama3x_template(
    "{%- if date_string is not defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
)

LLAMA32_TEMPLATE = _llama3x_template(
    "{%- if date_string is not defined %}"
    "{%- if strftime_now is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- else %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- endif %}"
)

QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

QWEN25_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN25_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set system_text = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system_text = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Mistral-Instruct conversations alternate user/assistant, starting with user') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_text %}{{- '[INST] ' + system_text + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """A named chat format: ``template`` (Jinja) and a one-line ``description``."""

    name: str
    template: str
    description: str


CHAT_FORMATS: Mapping[str, ChatFormat] = {
    f.name: f
    for f in (
        ChatFormat("plain", PLAIN_CHAT_TEMPLATE, "no chat markup (base models): system, user, 'Answer: '"),
        ChatFormat("llama3", LLAMA3_TEMPLATE, "Llama-3-Instruct"),
        ChatFormat("llama3.1", LLAMA31_TEMPLATE, "Llama-3.1-Instruct (system turn with 'Today Date: 26 Jul 2024')"),
        ChatFormat("llama3.2", LLAMA32_TEMPLATE, "Llama-3.2-Instruct (system turn with the run's date)"),
        ChatFormat("qwen2.5", QWEN25_TEMPLATE, "Qwen2.5-Instruct (ChatML, default system message)"),
        ChatFormat("mistral", MISTRAL_TEMPLATE, "Mistral-Instruct ([INST] ... [/INST])"),
    )
}

MODEL_TEMPLATE = "model"  # the label of a checkpoint's own chat template


def resolve_chat_template(spec: str | os.PathLike) -> tuple[str, str]:
    """``(label, Jinja template)`` of a format name in :data:`CHAT_FORMATS` or a Jinja file.

    Raises ``ValueError`` (unknown name, listing the names) or ``FileNotFoundError``.
    """
    text = str(spec)
    if text in CHAT_FORMATS:
        return text, CHAT_FORMATS[text].template
    path = Path(text)
    if path.suffix in (".jinja", ".j2", ".txt") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"chat template file {text!r} does not exist")
        return str(path), path.read_text(encoding="utf-8")
    raise ValueError(
        f"unknown chat template {text!r}: give a format name ({', '.join(CHAT_FORMATS)}) "
        "or the path of a Jinja file (*.jinja)"
    )


# ---------------------------------------------------------------------------------- dates
def template_reads_date(template: str | None) -> bool:
    """True when the template asks the renderer for today's date (``strftime_now``)."""
    return bool(template) and "strftime_now" in template


def check_date(date: str) -> str:
    """Returns ``date`` if it is an ISO date ``YYYY-MM-DD``, else raises ``ValueError``."""
    try:
        _dt.date.fromisoformat(str(date))
    except ValueError:
        raise ValueError(f"chat date must be an ISO date YYYY-MM-DD, got {date!r}") from None
    if len(str(date)) != 10:
        raise ValueError(f"chat date must be an ISO date YYYY-MM-DD, got {date!r}")
    return str(date)


def today() -> str:
    """Today's date in UTC as ``YYYY-MM-DD`` (the date a new run fixes)."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


# strftime directives a fixed-date ``strftime_now`` understands (C89 plus the glibc no-padding forms)
_DIRECTIVES = tuple("aAbBdHIjmMpSUwWyYZz") + ("-d", "-m", "-H", "-I", "-M", "-S", "-j")


def date_prelude(date: str) -> str:
    """Jinja source defining a macro ``strftime_now(format)`` that formats ``date`` (at midnight).

    Put in front of a chat template, it shadows the renderer's ``strftime_now`` (transformers
    passes only plain data as template variables, so a Python function cannot replace it).
    The directives of :data:`_DIRECTIVES` and ``%%`` are supported; a format with others keeps
    them as written.
    """
    moment = _dt.datetime.combine(_dt.date.fromisoformat(check_date(date)), _dt.time())
    chain = "format | replace('%%', '\\x00')"
    for directive in sorted(_DIRECTIVES, key=len, reverse=True):
        value = moment.strftime("%" + directive) if not directive.startswith("-") else str(
            int(moment.strftime("%" + directive[1:])))
        chain += f" | replace('%{directive}', '{value}')"
    chain += " | replace('\\x00', '%')"
    return "{%- macro strftime_now(format) -%}{{- " + chain + " -}}{%- endmacro -%}"


class ChatTokenizer:
    """A tokenizer whose chat template (and, for templates that read it, date) is fixed.

    Wraps a transformers tokenizer: ``apply_chat_template`` uses ``chat_template`` (unless a call
    passes its own) and, when ``date`` is set, a ``strftime_now`` that returns that date; every
    other attribute and call goes to the wrapped tokenizer, which is never modified.

    Attributes: ``tokenizer`` (the wrapped one), ``chat_template``, ``chat_template_name``
    (a :data:`CHAT_FORMATS` name, a file path, or ``"model"``), ``chat_date`` (``YYYY-MM-DD``
    or None).
    """

    def __init__(self, tokenizer: Any, chat_template: str | None, chat_template_name: str,
                 chat_date: str | None = None):
        inner = tokenizer.tokenizer if isinstance(tokenizer, ChatTokenizer) else tokenizer
        object.__setattr__(self, "tokenizer", inner)
        object.__setattr__(self, "chat_template", chat_template)
        object.__setattr__(self, "chat_template_name", chat_template_name)
        object.__setattr__(self, "chat_date", None if chat_date is None else check_date(chat_date))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ChatTokenizer is read-only; use with_chat_format() for another template or date")

    def apply_chat_template(self, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        template = kwargs.get("chat_template")
        if template is None:
            template = self.chat_template
        if template is not None and self.chat_date is not None and template_reads_date(template):
            template = date_prelude(self.chat_date) + template
        kwargs["chat_template"] = template
        return self.tokenizer.apply_chat_template(conversation, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "tokenizer"), name)

    def __repr__(self) -> str:
        return (f"ChatTokenizer({type(self.tokenizer).__name__}, template={self.chat_template_name!r}, "
                f"date={self.chat_date!r})")


def chat_template_name(tokenizer: Any) -> str | None:
    """The label of the tokenizer's chat template: a format name, a file, ``"model"`` (the
    checkpoint's own) or None (no template)."""
    if isinstance(tokenizer, ChatTokenizer):
        return tokenizer.chat_template_name
    return MODEL_TEMPLATE if getattr(tokenizer, "chat_template", None) else None


def chat_date(tokenizer: Any) -> str | None:
    """The date bound to the tokenizer's chat template (None if none is bound)."""
    return tokenizer.chat_date if isinstance(tokenizer, ChatTokenizer) else None


def reads_date(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template reads today's date (needs a fixed date)."""
    return template_reads_date(getattr(tokenizer, "chat_template", None))


def with_chat_format(lm: Any, chat_template: str | os.PathLike | None = None, *, date: str | None = None) -> Any:
    """``lm`` with its tokenizer's chat template replaced and/or its date fixed (a new ``LM``).

    Args:
      lm: a :class:`jaxalign.model.LM` (anything with ``.tokenizer`` that
        ``dataclasses.replace`` accepts).
      chat_template: a :data:`CHAT_FORMATS` name, a Jinja file, or None to keep the current one.
      date: ``YYYY-MM-DD``: the date templates that call ``strftime_now`` render; ignored (not
        bound) when the template does not read the date. None keeps the bound one, if any.

    The weights are shared with ``lm``; only the tokenizer object differs.
    """
    if lm.tokenizer is None:
        raise ValueError(f"model {getattr(lm, 'name', '?')!r} has no tokenizer to render a chat template with")
    tokenizer = lm.tokenizer
    if chat_template is not None:
        name, template = resolve_chat_template(chat_template)
    else:
        name, template = chat_template_name(tokenizer), getattr(tokenizer, "chat_template", None)
    if date is None:
        date = chat_date(tokenizer)
    if not template_reads_date(template):
        date = None
    if (chat_template is None and date is None and not isinstance(tokenizer, ChatTokenizer)):
        return lm
    return dataclasses.replace(lm, tokenizer=ChatTokenizer(tokenizer, template, name or MODEL_TEMPLATE, date))


def bind_run_date(lm: Any, date: str | None = None) -> tuple[Any, str | None]:
    """``(lm, date)``: when ``lm``'s chat template reads today's date, ``lm`` with ONE date bound.

    The date is ``date`` when given (e.g. the one recorded with a saved run or prompt), else
    the one already bound, else today (UTC). A template that does not read the date gets none:
    ``(lm, None)``. Call it once at the start of a run and record the date it returns.
    """
    if lm.tokenizer is None or not reads_date(lm.tokenizer):
        return lm, None
    date = check_date(date) if date else (chat_date(lm.tokenizer) or today())
    return with_chat_format(lm, date=date), date
