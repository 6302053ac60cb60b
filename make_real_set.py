#!/usr/bin/env python3
"""An ESC-50-format set from real recordings, stems kept: ``lmac/recipes/make_real_set.py``, whose docstring has the commands."""

from lmac.recipes.make_real_set import command_line

if __name__ == "__main__":
    command_line()
