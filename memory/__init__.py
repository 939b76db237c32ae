"""The LSH one-shot learning memory (Kaiser et al., 2017) on the lshcore index.

``core`` (``LSHMemory``, framework-neutral), ``torch`` / ``tensorflow`` / ``mxnet``
(a layer per framework, named after the framework like the adapters), ``omniglot``
(the Omniglot pipeline; imports torch).
"""

from lshcore.memory.core import LSHMemory

__all__ = ["LSHMemory"]
