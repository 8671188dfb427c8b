"""Optimizers: one module each behind one small interface (:class:`Optimizer`), found by name.

    Optimizer(name, init, update, phases, gradient, fixed_total, unit)   base.py
    register(optimizer) / get(name) / names()                          the registry

Built in, in this order: ``"de"`` (every evosax strategy, ``AlignConfig.strategy``:
:mod:`~jaxalign.optimizers.evolution`), ``"gradient"`` (Adam on the expected readout:
:mod:`~jaxalign.optimizers.adam`) and ``"hybrid"`` (the two composed:
:mod:`~jaxalign.optimizers.hybrid`). Optimizers know nothing of models or surveys: the run loop
(:mod:`jaxalign.optimize.pipeline`) hands them a fitness function.
"""

from jaxalign.optimizers import adam, evolution, hybrid
from jaxalign.optimizers.base import Fitness, Optimizer, Update, get, names, register, unregister

for _built_in in (evolution.OPTIMIZER, adam.OPTIMIZER, hybrid.OPTIMIZER):
    register(_built_in, replace=True)

__all__ = ["Fitness", "Optimizer", "Update", "get", "names", "register", "unregister"]
