"""Help a user can act on: every option of every command says what it does and its default,
and each command's --help ends with examples."""

from __future__ import annotations

import argparse

import pytest

from jaxalign.cli import EXAMPLES, HelpFormatter, build_parser


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


COMMANDS = dict(_commands(build_parser()))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_option_has_a_sentence_and_shows_its_default(path):
    parser = COMMANDS[path]
    formatter = HelpFormatter(prog="jaxalign")
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or "-h" in action.option_strings:
            continue
        if isinstance(action, argparse._VersionAction):
            continue
        assert action.help and len(action.help.split()) >= 3, f"{' '.join(path)} {action.option_strings}: no help"
        if not action.required:
            assert "default" in formatter._get_help_string(action), (path, action.option_strings)


@pytest.mark.parametrize("name", ["countries", "align", "score", "eval", "culturalbench", "robustness",
                                  "show", "generate", "chat", "export"])
def test_help_ends_with_examples(name):
    path = next(p for p in COMMANDS if p[-1] == name)
    text = COMMANDS[path].format_help()
    tail = text[text.index("examples:"):]
    assert len([line for line in tail.splitlines() if line.strip().startswith("jaxalign ")]) >= 2
    assert all(example in text for example in EXAMPLES[name])


def test_custom_target_example_says_why_there_is_no_persona():
    assert "no persona baseline" in COMMANDS[("align",)].format_help()


@pytest.mark.slow
def test_a_custom_target_run_says_why_there_is_no_persona(tmp_path, capsys):
    from jaxalign.cli import main

    code = main(["align", "--target", "PDI=80,IDV=20", "--generations", "1", "--population", "4",
                 "--k", "2", "--subspace", "4", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert "no persona baseline for" in captured.err and "names no country" in captured.err
    rows = [line.split()[0] for line in captured.out.splitlines() if line.strip()]
    assert "naive" in rows and "persona" not in rows
