#!/usr/bin/env python3
"""Trains an L2I (Listen to Interpret) interpreter: the NMF-based baseline L-MAC is compared with: ``lmac/recipes/train_l2i.py``, whose docstring has the commands.

As in SpeechBrain's interpret recipe, ``from train_l2i import L2I`` gives the package's.
"""

from lmac.recipes.train_l2i import command_line
from lmac.training.l2i import L2I

__all__ = ["L2I", "command_line"]

if __name__ == "__main__":
    command_line()
