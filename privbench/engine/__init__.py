"""The engine: one audit as data flowing through small modules, each owning one step.

- :mod:`~privbench.engine.spec`: what defines an audit (:class:`AuditSpec`), and
  :mod:`~privbench.engine.settings`: run parameters (flags, keyword arguments, suite cells), an
  attack's victim setting and :mod:`~privbench.engine.presets` to a spec.
- :mod:`~privbench.engine.components`: the spec's plugins resolved and validated.
- :mod:`~privbench.engine.pool`: data, population, keep-masks (:mod:`~privbench.engine.splits`),
  seeds and store keys.
- :mod:`~privbench.engine.fitting`: training or loading every model
  (:mod:`~privbench.engine.training`, :mod:`~privbench.engine.ensemble`) into the
  :mod:`~privbench.engine.store`.
- :mod:`~privbench.engine.signals`: the per-model signal cache and the attack's views.
- :mod:`~privbench.engine.attacks`, :mod:`~privbench.engine.analyses`,
  :mod:`~privbench.engine.reconstruct`: membership attacks, utility / memorization / scorers,
  reconstruction attacks.
- :mod:`~privbench.engine.recording`: the result's files and database rows.
- :mod:`~privbench.engine.audit`: the steps in order (:func:`run_audit`) and a suite's jobs.
- :mod:`~privbench.engine.progress`: the callbacks that progress leaves the engine through.

Submodules are imported on use so that ``import privbench`` stays quick.
"""
