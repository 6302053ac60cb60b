#!/usr/bin/env python3
"""WHAM! noise for training-time augmentation: ``lmac/recipes/wham_prepare.py``, whose docstring has the commands.

As in SpeechBrain's interpret recipe, ``from wham_prepare import prepare_wham, combine_batches`` gives the package's.
"""

from lmac.data.wham import combine_batches, prepare_wham
from lmac.recipes.wham_prepare import command_line

__all__ = ["combine_batches", "command_line", "prepare_wham"]

if __name__ == "__main__":
    command_line()
