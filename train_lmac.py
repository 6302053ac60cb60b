#!/usr/bin/env python3
"""Trains an L-MAC interpreter of a frozen audio classifier (CNN14 on ESC-50 by default): ``lmac/recipes/train_lmac.py``, whose docstring has the commands.

As in SpeechBrain's interpret recipe, ``from train_lmac import LMAC, tv_loss`` gives the package's.
"""

from lmac.recipes.train_lmac import command_line
from lmac.training.lmac import LMAC, tv_loss

__all__ = ["LMAC", "command_line", "tv_loss"]

if __name__ == "__main__":
    command_line()
