"""jaxalign: align a frozen LLM with a country's Hofstede profile by tuning a soft prompt.

The public names are imported lazily, so ``import jaxalign`` is cheap and pulls in jax,
transformers or evosax only when the name that needs them is first used. The subpackages
(``jaxalign.survey``, ``jaxalign.model``, ``jaxalign.optimize``...) are attributes of the
package the same way: ``import jaxalign`` is enough for ``jaxalign.survey.save_wording(...)``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # survey: instruments, scoring, country targets, losses
    "Item": "jaxalign.survey",
    "Instrument": "jaxalign.survey",
    "vsm13": "jaxalign.survey",
    "load_wording": "jaxalign.survey",
    "Target": "jaxalign.survey",
    "hofstede": "jaxalign.survey",
    "countries": "jaxalign.survey",
    "custom_target": "jaxalign.survey",
    "resolve_target": "jaxalign.survey",
    "DIMENSIONS": "jaxalign.survey",
    "l1_loss": "jaxalign.survey",
    "kendall_tau": "jaxalign.survey",
    "anchor_constants": "jaxalign.survey",
    # model
    "LlamaConfig": "jaxalign.model",
    "LM": "jaxalign.model",
    "load_model": "jaxalign.model",
    # prompting: items rendered with a chat template around the soft-prompt slot
    "PromptBatch": "jaxalign.prompting",
    "render_items": "jaxalign.prompting",
    "render_text": "jaxalign.prompting",
    "bucket_items": "jaxalign.prompting",
    "answer_token_ids": "jaxalign.prompting",
    # soft prompts
    "SoftPromptSpace": "jaxalign.softprompt",
    "full_space": "jaxalign.softprompt",
    "subspace": "jaxalign.softprompt",
    "init_from_ids": "jaxalign.softprompt",
    "init_random_vocab": "jaxalign.softprompt",
    "save_soft_prompt": "jaxalign.softprompt",
    "load_soft_prompt": "jaxalign.softprompt",
    "check_soft_prompt": "jaxalign.softprompt",
    "prompt_provenance": "jaxalign.softprompt",
    # optimize: evolve(), the pipeline's loop on any fitness function, with checkpoint/resume
    "EvolutionConfig": "jaxalign.optimize",
    "EvolutionResult": "jaxalign.optimize",
    "evolve": "jaxalign.optimize",
    # scoring, baselines and the alignment run
    "Scorer": "jaxalign.scoring",
    "Scores": "jaxalign.scoring",
    "make_scorer": "jaxalign.scoring",
    "run_baselines": "jaxalign.baselines",
    "AlignConfig": "jaxalign.api",
    "AlignResult": "jaxalign.api",
    "AlignResults": "jaxalign.api",
    "align": "jaxalign.api",
    "score": "jaxalign.api",
    # evaluation beyond the tuned items
    "gradient_align": "jaxalign.api",
    "heldout_vsm13": "jaxalign.survey.paraphrase",
    "load_culturalbench": "jaxalign.evaluate.culturalbench",
    "evaluate_culturalbench": "jaxalign.evaluate.culturalbench",
    "evaluate_robustness": "jaxalign.evaluate.robustness",
    "align_both_orders": "jaxalign.api",
    # steering vectors: a vector added after decoder block L (jaxalign.interventions)
    "SteeringScorer": "jaxalign.scoring_steering",
    "make_steering_scorer": "jaxalign.scoring_steering",
    "SteeringVector": "jaxalign.interventions.steering",
    "save_steering": "jaxalign.interventions.steering",
    "load_steering": "jaxalign.interventions.steering",
    "export_control_vector": "jaxalign.generation.control_vector",
    # using the aligned prompt: generation, chat, PEFT export
    "generate": "jaxalign.generation",
    "reply_log_likelihood": "jaxalign.generation",
    "Generation": "jaxalign.generation",
    "export_peft": "jaxalign.generation",
    # several devices and hosts (jax.sharding meshes)
    "make_mesh": "jaxalign.parallel",
    "parse_mesh": "jaxalign.parallel",
    "initialize_distributed": "jaxalign.parallel",
    "is_main_process": "jaxalign.parallel",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

# subpackages and modules reachable as attributes after a plain ``import jaxalign``
# (``jaxalign.survey.save_wording(...)``), imported on first use like the names above
_SUBMODULES: frozenset[str] = frozenset({
    "api", "baselines", "cli", "evaluate", "fingerprint", "generation", "interventions", "memory", "model",
    "optimize", "optimizers", "parallel", "plots", "prompting", "scoring", "scoring_steering", "softprompt", "survey",
})


class _NoTorchAdvice(logging.Filter):
    """Drops transformers' import-time "PyTorch was not found" advice.

    jaxalign uses transformers for tokenizers, chat templates and configs only; its models are
    Flax, so a missing PyTorch is the normal case and the advice would only alarm. The filter sits
    on the ``transformers`` logger (which emits the message) and drops nothing else.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "PyTorch was not found" not in record.getMessage()


if not any(isinstance(f, _NoTorchAdvice) for f in logging.getLogger("transformers").filters):
    logging.getLogger("transformers").addFilter(_NoTorchAdvice())


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # importing sets the attribute on the package itself
        return importlib.import_module(f"jaxalign.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxalign' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | _SUBMODULES)
