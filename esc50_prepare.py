#!/usr/bin/env python3
"""ESC-50 data preparation and the datasets the recipes train on: ``lmac/recipes/esc50_prepare.py``, whose docstring has the commands."""

from lmac.recipes.esc50_prepare import command_line

if __name__ == "__main__":
    command_line()
