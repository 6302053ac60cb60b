#!/usr/bin/env python3
"""Learns the NMF dictionary of the L2I baseline on the training clips: ``lmac/recipes/train_nmf.py``, whose docstring has the commands."""

from lmac.recipes.train_nmf import command_line

if __name__ == "__main__":
    command_line()
