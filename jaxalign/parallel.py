"""Every device of a host, and several hosts: JAX SPMD over a ("data", "model") mesh.

jaxalign does not run its own process pool: it hands JAX one program and a
:class:`jax.sharding.Mesh` and lets the compiler (GSPMD) split the work.

* ``data`` axis: the population. Population members (each with all ``Q`` survey items) are
  sharded over it; the cross-device traffic this costs is the gather of the ``(P,)`` losses and
  ``(P, D)`` dimension scores the optimizer needs (every device then runs the small optimizer
  update itself, on a replicated state).
* ``model`` axis: the weights, Megatron style. Attention heads (q/k/v columns, o_proj rows),
  the MLP hidden size (gate/up columns, down_proj rows) and the vocabulary rows of the embedding
  and LM head are split over it, so a model larger than one device still runs; norms are
  replicated. The model's own collectives (an all-reduce after o_proj and down_proj, and after
  the embedding/LM-head row gathers) are the only other traffic.

A population that does not divide by the data axis is **padded** with copies of member 0 whose
results are dropped (the run still sees exactly ``P`` losses); a model whose heads, KV heads,
MLP hidden size or vocabulary does not divide by the model axis is **refused** with a
:class:`ValueError` naming the dimension. Nothing is ever silently mis-sharded.

Typical use::

    mesh = jaxalign.make_mesh()                          # all devices on "data"
    mesh = jaxalign.make_mesh(**jaxalign.parse_mesh("data=4,model=2"))
    lm = jaxalign.load_model("meta-llama/...", mesh=mesh)   # weights placed sharded at load
    jaxalign.align(lm, "Japan", mesh=mesh)

Several hosts (a TPU pod slice, several GPU nodes): call :func:`initialize_distributed` first
thing on every host, run the same command everywhere, and only :func:`is_main_process` writes
files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"
AXES: tuple[str, str] = (DATA_AXIS, MODEL_AXIS)

# How each parameter is split over the model axis (None: that array axis is not split).
# Shapes: see jaxalign.model.llama (stacked layers have a leading layer axis L).
_PARAM_SPECS: dict[str, tuple[str | None, ...]] = {
    "embed_tokens": (MODEL_AXIS, None),             # (V, d): vocabulary rows
    "lm_head": (MODEL_AXIS, None),                  # (V, d): vocabulary rows
    "norm": (None,),                                # (d,)
    "input_layernorm": (None, None),                # (L, d)
    "post_attention_layernorm": (None, None),       # (L, d)
    "q_proj": (None, None, MODEL_AXIS),             # (L, d, N*hd): query heads
    "k_proj": (None, None, MODEL_AXIS),             # (L, d, K*hd): KV heads
    "v_proj": (None, None, MODEL_AXIS),             # (L, d, K*hd): KV heads
    "o_proj": (None, MODEL_AXIS, None),             # (L, N*hd, d): query heads
    "gate_proj": (None, None, MODEL_AXIS),          # (L, d, F): MLP hidden
    "up_proj": (None, None, MODEL_AXIS),            # (L, d, F): MLP hidden
    "down_proj": (None, MODEL_AXIS, None),          # (L, F, d): MLP hidden
    "q_bias": (None, MODEL_AXIS),                   # (L, N*hd): query heads (Qwen2)
    "k_bias": (None, MODEL_AXIS),                   # (L, K*hd): KV heads
    "v_bias": (None, MODEL_AXIS),                   # (L, K*hd): KV heads
    "o_bias": (None, None),                         # (L, d): added after the o_proj all-reduce
}


# -- meshes ------------------------------------------------------------------------------------

def parse_mesh(text: str) -> dict[str, int]:
    """``"data=4,model=2"`` -> ``{"data": 4, "model": 2}`` (either key may be left out).

    ``data=-1`` (or leaving ``data`` out) means "every device not used by the model axis".
    """
    out: dict[str, int] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in AXES:
            raise ValueError(f"bad mesh {text!r}: expected 'data=N,model=M' (axes: {', '.join(AXES)})")
        if name in out:
            raise ValueError(f"bad mesh {text!r}: axis {name!r} given twice")
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"bad mesh {text!r}: {name} size {value.strip()!r} is not an integer") from None
        if size < 1 and not (name == DATA_AXIS and size == -1):
            raise ValueError(f"bad mesh {text!r}: {name} size must be >= 1 (data may be -1: the rest)")
        out[name] = size
    if not out:
        raise ValueError(f"bad mesh {text!r}: expected 'data=N,model=M'")
    if out.get(DATA_AXIS) == -1:
        del out[DATA_AXIS]
    return out


def make_mesh(data: int | None = None, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A 2-D mesh ``(data, model)`` with axis names ``("data", "model")``.

    Args:
      data: devices on the data (population) axis; ``None``: all devices not on the model axis.
      model: devices on the model (weights) axis.
      devices: the devices to use (default ``jax.devices()``: every device of every host).

    Raises:
      ValueError: ``data * model`` differs from the number of devices, or a size is < 1.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if not isinstance(model, (int, np.integer)) or model < 1:
        raise ValueError(f"model axis size must be an integer >= 1, got {model!r}")
    if data is None:
        if n % model:
            raise ValueError(f"model axis size {model} does not divide the {n} available devices")
        data = n // model
    if not isinstance(data, (int, np.integer)) or data < 1:
        raise ValueError(f"data axis size must be an integer >= 1, got {data!r}")
    if data * model != n:
        raise ValueError(
            f"mesh data={data} x model={model} needs {data * model} devices, but {n} are available "
            f"({devices[0].platform}); choose sizes whose product is {n}")
    try:  # topology-aware order on TPU/GPU (keeps the model axis on the fastest links)
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh((data, model), devices=devices)
    except Exception:  # e.g. a subset of devices or simulated CPU devices
        grid = np.asarray(devices, dtype=object).reshape(data, model)
    return Mesh(grid, AXES)


def data_size(mesh: Mesh | None) -> int:
    """Devices on the data axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def model_size(mesh: Mesh | None) -> int:
    """Devices on the model axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[MODEL_AXIS])


def describe_mesh(mesh: Mesh) -> str:
    """``"data=4,model=2 (8 tpu devices, 1 process)"``."""
    devices = mesh.devices.ravel()
    return (f"data={data_size(mesh)},model={model_size(mesh)} ({devices.size} {devices[0].platform} "
            f"devices, {jax.process_count()} process{'es' if jax.process_count() > 1 else ''})")


# -- model parameters --------------------------------------------------------------------------

def check_model_divisible(config: Any, mesh: Mesh | None) -> None:
    """Refuses a model whose split dimensions do not divide by the model axis.

    ``config`` is a :class:`jaxalign.model.LlamaConfig`. Checked: attention heads, KV heads,
    MLP hidden size (``intermediate_size``) and vocabulary rows.
    """
    m = model_size(mesh)
    if m == 1:
        return
    dims = {
        "attention heads (num_attention_heads)": config.num_attention_heads,
        "KV heads (num_key_value_heads)": config.num_key_value_heads,
        "MLP hidden size (intermediate_size)": config.intermediate_size,
        "vocabulary rows (vocab_size)": config.vocab_size,
    }
    bad = [f"{name} = {value}" for name, value in dims.items() if value % m]
    if bad:
        raise ValueError(
            f"the model axis of size {m} does not divide: {'; '.join(bad)}. Each of these is split "
            f"over the model axis; choose a model axis size that divides all of them "
            f"(e.g. a divisor of {math.gcd(*dims.values())}) and put the other devices on the data axis")


def _param_name(path: tuple[Any, ...]) -> str:
    names = [str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", "")))) for p in path]
    for name in reversed(names):
        if name in _PARAM_SPECS:
            return name
    raise ValueError(f"no partition rule for parameter {'/'.join(names)!r}")


def param_spec(name: str, ndim: int) -> PartitionSpec:
    """The :class:`PartitionSpec` of the parameter called ``name`` (see the module docstring)."""
    spec = _PARAM_SPECS.get(name)
    if spec is None:
        raise ValueError(f"no partition rule for parameter {name!r}; known: {', '.join(_PARAM_SPECS)}")
    if len(spec) != ndim:
        raise ValueError(f"parameter {name!r} has {ndim} axes, its partition rule {spec} has {len(spec)}")
    return PartitionSpec(*spec)


def param_sharding(name: str, ndim: int, mesh: Mesh) -> NamedSharding:
    """``NamedSharding`` of one parameter on ``mesh`` (replicated over the data axis)."""
    return NamedSharding(mesh, param_spec(name, ndim))


def param_shardings(params: Any, mesh: Mesh) -> Any:
    """The tree of ``NamedSharding`` matching ``params`` (an ``nnx.State`` or a pure dict).

    An int8 weight (:class:`jaxalign.model.quantize.Int8Weight`) is split like the float weight
    it stands for; its per-output-channel ``scale`` is split with its output channels.
    """
    def sharding(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        name = _param_name(path)
        if str(getattr(path[-1], "name", "")) == "scale":
            return scale_sharding(name, np.ndim(leaf), mesh)
        return param_sharding(name, np.ndim(leaf), mesh)

    return jax.tree_util.tree_map_with_path(sharding, params)


def scale_sharding(name: str, ndim: int, mesh: Mesh) -> NamedSharding:
    """Sharding of the int8 scales ``(..., out)`` of linear weight ``name`` ``(..., in, out)``:
    the weight's partition rule without its ``in`` axis (scales follow their output channels)."""
    spec = tuple(param_spec(name, ndim + 1))
    return NamedSharding(mesh, PartitionSpec(*spec[:-2], spec[-1]))


def shard_params(params: Any, mesh: Mesh) -> Any:
    """Places every parameter with its sharding (host or device arrays in, sharded arrays out).

    Host (numpy) arrays go straight to their shards: the whole array never sits on one device.
    """
    return put_global(params, param_shardings(params, mesh))


def put_global(tree: Any, shardings: Any) -> Any:
    """``jax.device_put(tree, shardings)`` that also works with several processes.

    ``shardings`` is one sharding or a tree of them matching ``tree``. With several processes a
    sharding spans devices of other processes, and ``jax.device_put`` refuses to move an array
    that lives on this process's devices there; such leaves are placed from a host copy instead
    (every process holds the same value: jaxalign builds its inputs deterministically). PRNG key
    arrays travel as their key data. One process: exactly ``jax.device_put``.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def put(x: Any, sharding: jax.sharding.Sharding) -> Any:
        if not (isinstance(x, jax.Array) and x.is_fully_addressable and not sharding.is_fully_addressable):
            return jax.device_put(x, sharding)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = _from_host(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return _from_host(np.asarray(x), sharding)

    def _from_host(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
        # each process fills its own shards from its (identical) host copy; unlike device_put this
        # does not compare the values across processes, which NaN (a masked target) would fail
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def layer_slice_sharding(name: str, mesh: Mesh, *, transposed: bool) -> NamedSharding:
    """Sharding of one layer's slice ``(in, out)`` of stacked parameter ``name`` (no layer axis).

    ``transposed=True`` gives it for the checkpoint's ``(out, in)`` layout, so a tensor read from
    disk can be placed straight onto its shards before it is transposed into the stacked buffer.
    """
    spec = _PARAM_SPECS[name][1:]
    return NamedSharding(mesh, PartitionSpec(*(spec[::-1] if transposed else spec)))


def sharded_zeros(shape: tuple[int, ...], dtype: Any, sharding: NamedSharding) -> jax.Array:
    """A zero array created directly in its shards (never whole on one device)."""
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()


def shard_lm(lm: Any, mesh: Mesh) -> Any:
    """A copy of a loaded :class:`~jaxalign.model.LM` whose weights are sharded over ``mesh``.

    Prefer ``load_model(..., mesh=mesh)``, which places each weight sharded as it is read; this
    is for a model already in memory (it must fit where it is now). The copy is built with
    ``type(lm)(name=, config=, model=, tokenizer=)``, so this module needs nothing of
    :mod:`jaxalign.model` (which imports this one).
    """
    from flax import nnx

    check_model_divisible(lm.config, mesh)
    model = nnx.merge(lm.graphdef, shard_params(lm.params, mesh))
    return type(lm)(name=lm.name, config=lm.config, model=model, tokenizer=lm.tokenizer)


# -- the population ------------------------------------------------------------------------------

def population_spec(ndim: int) -> PartitionSpec:
    """``PartitionSpec("data", None, ...)``: leading (population) axis over the data axis."""
    return PartitionSpec(DATA_AXIS, *([None] * (ndim - 1)))


def padded_population(population: int, mesh: Mesh | None) -> int:
    """The population rounded up to a multiple of the data axis size."""
    n = data_size(mesh)
    return -(-population // n) * n


def pad_population(prompts: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Pads ``prompts (P, ...)`` to ``(P', ...)``, ``P'`` a multiple of the data axis, with copies of member 0."""
    population = prompts.shape[0]
    extra = padded_population(population, mesh) - population
    if extra == 0:
        return prompts
    fill = jnp.broadcast_to(prompts[:1], (extra, *prompts.shape[1:]))
    return jnp.concatenate([prompts, fill], axis=0)


def constrain_population(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside jit: ask the compiler to shard ``x``'s leading (population) axis over the data axis.

    Identity without a mesh, and when the leading axis does not divide by the data axis.
    """
    if mesh is None or data_size(mesh) == 1 or x.shape[0] % data_size(mesh):
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, population_spec(x.ndim)))


def map_over_data_shards(fn: Any, members: jax.Array, mesh: Mesh | None) -> Any:
    """Inside jit: ``fn(members)`` computed as independent slices, one per data-axis shard.

    ``members (m, ...)`` with ``m`` divisible by the data axis size ``n`` is viewed as
    ``(n, m / n, ...)``, ``fn`` is ``vmap``-ed over the leading axis, which is constrained to the
    data axis, and the result is flattened back to ``(m, ...)``. This keeps whatever ``fn`` does
    to its batch (e.g. the scorer's item-major ``(Q * m)`` row layout) local to each shard, so
    the compiler inserts no resharding (all-gather) of activations or key/value caches.
    Computations that do not depend on ``members`` (the shared prefix) are not batched: every
    device computes them once. Without a mesh (or with a data axis of 1) this is ``fn(members)``.
    """
    n = data_size(mesh)
    if n == 1 or members.shape[0] % n:
        return fn(members)
    grouped = members.reshape(n, members.shape[0] // n, *members.shape[1:])
    grouped = jax.lax.with_sharding_constraint(grouped, NamedSharding(mesh, population_spec(grouped.ndim)))
    out = jax.vmap(fn)(grouped)
    out = jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, population_spec(x.ndim))), out)
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), out)


def gather_to_all(tree: Any, mesh: Mesh | None) -> Any:
    """Inside jit: every array of ``tree`` made whole on every device (the fitness gather).

    An optimizer's fitness function starts with ``z = gather_to_all(z, mesh)`` (otherwise the
    compiler propagates the scorer's data sharding back into the optimizer's population) and
    returns ``gather_to_all((losses, dims), mesh)``: the ``(P,)``
    losses and ``(P, D)`` scores are all-gathered once per generation, and the optimizer's
    update then runs on a replicated state on every device (no other traffic). Identity
    without a mesh.
    """
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec()))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array of ``tree`` whole on every device of ``mesh`` (e.g. optimizer state)."""
    return put_global(tree, NamedSharding(mesh, PartitionSpec()))


def _on_mesh(tree: Any, mesh: Mesh) -> bool:
    leaves = jax.tree.leaves(tree)
    return all(isinstance(getattr(x, "sharding", None), NamedSharding) and x.sharding.mesh == mesh
               for x in leaves)


def place_params(params: Any, mesh: Mesh) -> Any:
    """Model weights on ``mesh``: sharded over its ``"model"`` axis (:func:`shard_params`), or as
    they are when already placed there (``load_model(..., mesh=mesh)``)."""
    return params if _on_mesh(params, mesh) else shard_params(params, mesh)


def place_scorer_inputs(inputs: Any, mesh: Mesh) -> Any:
    """A scorer's jit arguments on ``mesh``: weights sharded (kept if already), the rest replicated.

    ``inputs`` is a :class:`jaxalign.scoring.ScorerInputs`. Weights already placed by
    ``load_model(..., mesh=mesh)`` are not moved.
    """
    import dataclasses

    params = place_params(inputs.params, mesh)
    others = {f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs) if f.name != "params"}
    return dataclasses.replace(inputs, params=params, **replicate(others, mesh))


# -- several hosts -----------------------------------------------------------------------------

_CLUSTER_ENV = (
    "JAX_COORDINATOR_ADDRESS",   # explicit jax.distributed settings
    "JAX_NUM_PROCESSES",         # (with JAX_PROCESS_ID: read by initialize_distributed)
    "COORDINATOR_ADDRESS",
    "TPU_WORKER_HOSTNAMES",      # Cloud TPU VM pod slices (set on every worker)
    "MEGASCALE_COORDINATOR_ADDRESS",
    "SLURM_JOB_NUM_NODES",       # SLURM (jax detects the rest)
    "OMPI_COMM_WORLD_SIZE",      # Open MPI (mpirun)
)


def launched_on_several_hosts() -> bool:
    """Whether the environment says this process is one of several (TPU pod slice, SLURM, MPI,
    or ``JAX_NUM_PROCESSES`` > 1 / ``JAX_COORDINATOR_ADDRESS`` set by hand)."""
    hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if hostnames:
        return len([h for h in hostnames.split(",") if h.strip()]) > 1
    for name in ("JAX_NUM_PROCESSES", "SLURM_JOB_NUM_NODES", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value:
            return value.strip().isdigit() and int(value) > 1
    return any(os.environ.get(name) for name in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS",
                                                  "MEGASCALE_COORDINATOR_ADDRESS"))


def _process_settings_from_env() -> dict[str, int]:
    """``num_processes`` / ``process_id`` from ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, if set.

    jax itself reads only ``JAX_COORDINATOR_ADDRESS``; these two complete a hand-made launch
    (several processes on one machine, or hosts without a cluster manager).
    """
    out: dict[str, int] = {}
    for key, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        if not value.isdigit():
            raise ValueError(f"{name}={value!r} is not a non-negative integer")
        out[key] = int(value)
    return out


def initialize_distributed(force: bool | None = None, **kwargs: Any) -> bool:
    """Calls ``jax.distributed.initialize(**kwargs)`` when this is a multi-host launch.

    Must run before anything touches a device. ``force=True`` (the CLI's ``--distributed``)
    always initialises, ``False`` never does, ``None`` (default) decides from the environment
    (:func:`launched_on_several_hosts`). On a Cloud TPU pod slice, SLURM or Open MPI,
    ``jax.distributed.initialize()`` finds the coordinator and process ids itself; elsewhere pass
    ``coordinator_address=``, ``num_processes=``, ``process_id=``, or set the environment
    variables ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID`` on every process. Returns whether it initialised.
    Calling it twice is harmless.
    """
    wanted = launched_on_several_hosts() if force is None else bool(force)
    if not wanted:
        return False
    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(**{**_process_settings_from_env(), **kwargs})
    except RuntimeError as error:
        if "must be called before" not in str(error):
            raise
        raise RuntimeError(
            f"{error} Call jaxalign.initialize_distributed() first thing, before importing "
            "jaxalign.api / jaxalign.optimize or evosax (importing evosax starts the backend).") from None
    return True


def is_main_process() -> bool:
    """True on process 0 (the one that writes results, plots and logs)."""
    return jax.process_index() == 0


def sync_processes(name: str) -> None:
    """Waits until every process has reached the point called ``name`` (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def shared_text(value: str | None, width: int = 64) -> str | None:
    """``value`` as process 0 has it, on every process (``None`` stays ``None``; no-op with one
    process). For a decision that must be the same everywhere, such as a run's chat date read
    from each host's clock, which can differ across midnight. ``value`` is ASCII of at most
    ``width`` characters."""
    if jax.process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    codes = np.zeros((width + 1,), np.int32)
    if value is not None:
        raw = value.encode("ascii")
        if len(raw) > width:
            raise ValueError(f"shared_text: {value!r} is longer than {width} characters")
        codes[0], codes[1:len(raw) + 1] = 1, np.frombuffer(raw, np.uint8)
    codes = np.asarray(multihost_utils.broadcast_one_to_all(codes))
    if not codes[0]:
        return None
    return bytes(int(c) for c in codes[1:] if c).decode("ascii")
