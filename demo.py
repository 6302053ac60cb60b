#!/usr/bin/env python3
"""The whole L-MAC pipeline on synthetic data, on a CPU, in minutes (``make demo``): ``lmac/recipes/demo.py``, whose docstring has the commands."""

from lmac.recipes.demo import command_line

if __name__ == "__main__":
    command_line()
