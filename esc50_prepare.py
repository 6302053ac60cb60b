#!/usr/bin/env python3
"""ESC-50 data preparation and the datasets the recipes train on: ``lmac/recipes/esc50_prepare.py``, whose docstring has the commands.

As in SpeechBrain's interpret recipe, ``from esc50_prepare import prepare_esc50, dataio_prep`` gives the package's.
"""

from lmac.data.esc50 import dataio_prep, prepare_esc50
from lmac.recipes.esc50_prepare import command_line

__all__ = ["command_line", "dataio_prep", "prepare_esc50"]

if __name__ == "__main__":
    command_line()
