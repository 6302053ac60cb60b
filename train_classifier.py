#!/usr/bin/env python3
"""Trains the ESC-50 classifier that L-MAC interprets: CNN14 by default, or any classifier family: ``lmac/recipes/train_classifier.py``, whose docstring has the commands."""

from lmac.recipes.train_classifier import command_line

if __name__ == "__main__":
    command_line()
