"""Probes of the abilities compression is known to break (arithmetic, in-context retrieval, code, multi-step
reasoning): item generators and loaders, one module each; ``run.py`` scores them on a model (a likelihood measure
and a generation measure per family) and ``sandbox.py`` runs generated code away from prunekit's process."""
