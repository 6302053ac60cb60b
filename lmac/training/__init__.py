"""The Brains (``brain``: the interpreters' base, ``lmac``, ``l2i``, ``classifier``), NMF, checkpoints and
the device set-up.
"""
