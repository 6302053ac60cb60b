#!/usr/bin/env python3
"""Synthetic ESC-50-format and WHAM!-format data, deterministic from a seed: ``lmac/recipes/make_synthetic_data.py``, whose docstring has the commands."""

from lmac.recipes.make_synthetic_data import command_line

if __name__ == "__main__":
    command_line()
