"""The `inkfuse` command: one module per command group, one argument layer (`args`), errors
mapped to one line (`app`). No logic a library user would also need lives here.

A lazy face, as the other packages have: `inkfuse.cli.app` imports every group.
"""

from inkfuse.lazy import lazy_names

_NAMES = {"build_parser": "inkfuse.cli.app", "main": "inkfuse.cli.app"}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)
