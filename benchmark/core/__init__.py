"""The ground floor: what ``models/``, ``attacks/`` and ``defenses/`` build on.

Registries, configuration and profiles, datasets, geometry, depth projection, caches, the
training loop, parameter declarations, progress display and the process environment. Nothing
here imports the harness (``benchmark/*.py``) or the floors above; this ``__init__`` imports
nothing, so ``import benchmark.core.geometry`` loads only what it needs.
"""
