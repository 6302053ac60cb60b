#!/usr/bin/env python3
"""WHAM! noise for training-time augmentation: ``lmac/recipes/wham_prepare.py``, whose docstring has the commands."""

from lmac.recipes.wham_prepare import command_line

if __name__ == "__main__":
    command_line()
