#!/usr/bin/env python3
"""Where the time of an L-MAC step goes: the step against its floor (``make bench``): ``lmac/recipes/benchmark.py``, whose docstring has the commands."""

from lmac.recipes.benchmark import command_line

if __name__ == "__main__":
    command_line()
