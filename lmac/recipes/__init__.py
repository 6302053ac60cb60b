"""The ``main`` of each script at the repository's top (``train_lmac.py`` runs ``lmac.recipes.train_lmac``).

Each recipe module has ``main(argv)``, which the tests and ``demo.py`` call, and ``command_line()``, what its
script runs.
"""
