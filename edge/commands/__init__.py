"""The ``fedsim edge`` commands, one module per group; :mod:`fedsim.edge.cli` mounts them.

- :mod:`~fedsim.edge.commands.train`: ``train``, ``export``, ``evaluate``, ``profile``;
- :mod:`~fedsim.edge.commands.testbed`: ``serve``, ``worker``, ``health``;
- :mod:`~fedsim.edge.commands.bench`: ``bench``;
- :mod:`~fedsim.edge.commands.common`: the console and shared options.
"""
