#!/usr/bin/env python3
"""How robust the interpretations are: the whole pipeline over several seeds and classifier families (``make sweep``): ``lmac/recipes/sweep.py``, whose docstring has the commands."""

from lmac.recipes.sweep import command_line

if __name__ == "__main__":
    command_line()
