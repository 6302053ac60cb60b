#!/usr/bin/env python3
"""Trains an L-MAC interpreter of a frozen audio classifier (CNN14 on ESC-50 by default): ``lmac/recipes/train_lmac.py``, whose docstring has the commands."""

from lmac.recipes.train_lmac import command_line

if __name__ == "__main__":
    command_line()
