"""Memory, known before running: the scoring pass compiled ahead of time, and what fits a device.

::

    scorer, population P
      -> jit(score_fn).lower(abstract prompts (P, K, d), abstract inputs).compile()   (no FLOP run)
      -> compiled.memory_analysis(): argument / output / temp bytes, per device     MemoryReport
      -> weights' bytes per device (the shard of each weight, int8 weights as stored)

Nothing is allocated for the estimate: the prompts and every scorer input travel as
``jax.ShapeDtypeStruct`` (with their shardings), so an LM built abstractly
(``nnx.eval_shape``) of any size can be measured on a small machine; ``benchmarks/memory.py``
does this for the Llama-3-8B and -70B shapes.

``members_per_pass="auto"`` (:func:`auto_members_per_pass`): the largest slice of the
population (a divisor of it, a multiple of the mesh's data axis) whose compiled pass needs at most
``(1 - margin)`` of the device's free memory for its output and temporaries (the weights and
inputs are already resident, so free memory excludes them). Free memory comes from
``device.memory_stats()`` (``bytes_limit - bytes_in_use``); a backend that reports nothing (the CPU)
gets the whole population in one pass. Default margin: 10% of the free memory
(:data:`AUTO_MARGIN`), for allocator fragmentation and buffers outside the compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import parallel

AUTO_MARGIN = 0.10


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """Per-device bytes of one compiled scoring pass (``None`` where the backend gives no figure).

    ``weights_bytes``: the model's weights on one device (its shards). ``argument_bytes``,
    ``output_bytes``, ``temp_bytes``, ``alias_bytes``, ``code_bytes``: from
    ``compiled.memory_analysis()``; arguments include the weights. ``peak_bytes``: their sum
    (arguments + outputs + temporaries - aliased), the compiler's estimate of the pass's footprint.
    """

    population: int
    members_per_pass: int
    n_devices: int
    platform: str
    weights_bytes: int
    argument_bytes: int | None
    output_bytes: int | None
    temp_bytes: int | None
    alias_bytes: int | None
    code_bytes: int | None

    @property
    def peak_bytes(self) -> int | None:
        """Arguments + outputs + temporaries - aliased bytes, per device (``None`` if unknown)."""
        if None in (self.argument_bytes, self.output_bytes, self.temp_bytes):
            return None
        return self.argument_bytes + self.output_bytes + self.temp_bytes - (self.alias_bytes or 0)

    @property
    def working_bytes(self) -> int | None:
        """Outputs + temporaries: what the pass needs beyond the resident weights and inputs."""
        if None in (self.output_bytes, self.temp_bytes):
            return None
        return self.output_bytes + self.temp_bytes

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ``peak_bytes`` and ``working_bytes``, JSON-ready."""
        return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes, "working_bytes": self.working_bytes}


def weight_bytes_per_device(params: Any) -> int:
    """Bytes of the weights held by one device: each leaf's shard (the whole leaf if unsharded).

    Works on concrete arrays and on ``jax.ShapeDtypeStruct`` leaves (with or without sharding).
    """
    total = 0
    for leaf in jax.tree.leaves(params):
        shape = tuple(leaf.shape)
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            shape = tuple(sharding.shard_shape(shape))
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return int(total)


def _abstract(x: Any) -> Any:
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def compile_scoring_pass(scorer: Any, population: int, members_per_pass: int | None = None) -> Any:
    """The scorer's pass for ``population`` members compiled ahead of time (``jax.stages.Compiled``).

    ``members_per_pass`` overrides the scorer's own (an integer, or ``None`` for all at once).
    Nothing runs and nothing is allocated: prompts and inputs are abstract.
    """
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    if members_per_pass == "auto" or (members_per_pass is None and scorer.members_per_pass == "auto"):
        raise ValueError("compile_scoring_pass needs a concrete members_per_pass (an integer or None)")
    if members_per_pass is not None or scorer.members_per_pass is not None:
        scorer = dataclasses.replace(scorer, members_per_pass=members_per_pass)
    sharding = None
    if scorer.mesh is not None:
        sharding = jax.sharding.NamedSharding(scorer.mesh, jax.sharding.PartitionSpec())
    prompts = jax.ShapeDtypeStruct((population, scorer.k, scorer.lm.config.hidden_size), jnp.float32,
                                   sharding=sharding)
    inputs = jax.tree.map(_abstract, scorer.inputs)
    return jax.jit(scorer.score_fn).lower(prompts, inputs).compile()


def scoring_memory(scorer: Any, population: int, members_per_pass: int | None = None) -> MemoryReport:
    """Compiles the scoring pass (see :func:`compile_scoring_pass`) and reports its memory per device.

    ``members_per_pass``: as in :func:`jaxalign.scoring.make_scorer` (``None``: the scorer's own,
    or the whole population).
    """
    if members_per_pass is None and scorer.members_per_pass not in (None, "auto"):
        members_per_pass = scorer.members_per_pass
    compiled = compile_scoring_pass(scorer, population, members_per_pass)
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # a backend without the analysis
        analysis = None

    def field(name: str) -> int | None:
        value = getattr(analysis, name, None) if analysis is not None else None
        return None if value is None else int(value)

    padded = parallel.padded_population(population, scorer.mesh)
    devices = scorer.mesh.devices.ravel() if scorer.mesh is not None else [jax.devices()[0]]
    return MemoryReport(
        population=population,
        members_per_pass=padded if members_per_pass is None else min(members_per_pass, padded),
        n_devices=len(devices),
        platform=devices[0].platform,
        weights_bytes=weight_bytes_per_device(scorer.inputs.params),
        argument_bytes=field("argument_size_in_bytes"),
        output_bytes=field("output_size_in_bytes"),
        temp_bytes=field("temp_size_in_bytes"),
        alias_bytes=field("alias_size_in_bytes"),
        code_bytes=field("generated_code_size_in_bytes"),
    )


def device_free_bytes(device: Any = None) -> int | None:
    """``bytes_limit - bytes_in_use`` of ``device`` (default: the first device), ``None`` if unknown."""
    device = jax.devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except Exception:
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _mesh_free_bytes(mesh: Any) -> int | None:
    if mesh is None:
        return device_free_bytes()
    frees = [device_free_bytes(d) for d in mesh.devices.ravel() if d.process_index == jax.process_index()]
    return None if not frees or None in frees else min(frees)


def auto_members_per_pass(scorer: Any, population: int, *, margin: float = AUTO_MARGIN,
                          free_bytes: int | None = None) -> int:
    """The largest members-per-pass whose compiled pass fits the device's free memory (see module doc).

    Args:
      scorer: a :class:`jaxalign.scoring.Scorer`.
      population: members per generation (``P``).
      margin: fraction of the free memory left unused (default 10%).
      free_bytes: the free bytes per device to plan for (default: ``device.memory_stats()``; the
        whole population when the backend reports none).

    Returns a divisor of the (mesh-padded) population that is a multiple of the mesh's data axis.
    Raises ``ValueError`` if even the smallest slice does not fit (the message says by how much).
    """
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    padded = parallel.padded_population(population, scorer.mesh)
    free = _mesh_free_bytes(scorer.mesh) if free_bytes is None else int(free_bytes)
    if free is None:
        return padded
    budget = (1.0 - margin) * free
    data = parallel.data_size(scorer.mesh)
    candidates = [m for m in range(padded, 0, -1) if padded % m == 0 and m % data == 0]

    def need(m: int) -> int:
        report = scoring_memory(scorer, population, members_per_pass=m)
        return report.working_bytes if report.working_bytes is not None else 0

    full = need(candidates[0])
    if full <= budget:
        return candidates[0]
    # working memory grows about linearly with the slice: start from that guess, then verify
    per_member = full / candidates[0]
    start = next((i for i, m in enumerate(candidates) if m * per_member <= budget), len(candidates) - 1)
    smallest_need = full
    for m in candidates[start:]:
        smallest_need = need(m)
        if smallest_need <= budget:
            return m
    raise ValueError(
        f"the scoring pass does not fit even {candidates[-1]} member(s) per pass: it needs "
        f"{smallest_need / 2**30:.2f} GiB beyond the weights, the device has {free / 2**30:.2f} GiB free "
        f"({margin:.0%} margin). Use int8 weights (quantize='int8'), a model axis (mesh), or a shorter K.")


def abstract_lm(config: Any, dtype: Any = jnp.bfloat16, *, quantize: str | None = None, mesh: Any = None,
                tokenizer: Any = None, name: str = "abstract") -> Any:
    """An :class:`~jaxalign.model.LM` of ``config``'s shape whose weights are ``jax.ShapeDtypeStruct``.

    Nothing is allocated: it can stand for Llama-3-70B on a laptop, for :func:`scoring_memory`
    (never call it). With a ``mesh`` each weight carries its sharding over the ``"model"`` axis, as
    ``load_model(..., mesh=mesh)`` would place it. ``tokenizer`` renders the survey (default: the
    tiny test tokenizer, whose ids all fall inside any real vocabulary).
    """
    from flax import nnx

    from jaxalign.model.llama import LM, Llama

    if tokenizer is None:
        from jaxalign.model.tiny_tokenizer import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    model = nnx.eval_shape(lambda: Llama(config, dtype=dtype, rngs=nnx.Rngs(0), quantize=quantize))
    if mesh is not None:
        parallel.check_model_divisible(config, mesh)
        graphdef, state = nnx.split(model)
        shardings = parallel.param_shardings(state, mesh)
        state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
        model = nnx.merge(graphdef, state)
    return LM(name=name, config=config, model=model, tokenizer=tokenizer)
