"""The classifier families (``families``, ``cnn14``, ``vit``), the frozen classifier and the L-MAC decoder
(``map_decoder``).
"""
