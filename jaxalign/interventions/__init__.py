"""Interventions: what is tuned on the frozen model (see :mod:`jaxalign.interventions.base`).

- :mod:`~jaxalign.interventions.base`: what an intervention is (parameters, site, scorer, file),
  :data:`~jaxalign.interventions.base.KINDS`, :func:`~jaxalign.interventions.base.kind_of_file`.
- :mod:`~jaxalign.interventions.steering`: a vector added to the residual stream after block ``L``:
  the forward pass with the add, its search space, its file with provenance.

The soft prompt's own module is :mod:`jaxalign.softprompt` (its parameterisation and file).
"""
