#!/usr/bin/env python3
"""Exports a trained L-MAC interpreter as a self-contained folder for ``LMACInterpreter.from_hparams``: ``lmac/recipes/export_interpreter.py``, whose docstring has the commands."""

from lmac.recipes.export_interpreter import command_line

if __name__ == "__main__":
    command_line()
