"""The ``hwmodel`` command line: the parser and dispatcher (:mod:`hwmodel.cli.app`) and one module per command
(``hwmodel.cli.<command>``, each with ``register(subparsers)``)."""

from .app import main

__all__ = ["main"]
