#!/usr/bin/env python3
"""Evaluates a trained L-MAC interpreter, or interprets your own sound files: ``lmac/recipes/eval.py``, whose docstring has the commands."""

from lmac.recipes.eval import command_line

if __name__ == "__main__":
    command_line()
