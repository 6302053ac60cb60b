"""The Brain every interpreter of the recipe trains with, where SpeechBrain's interpret recipe has it::

    from interpreter_brain import InterpreterBrain

It is ``lmac.training.brain.InterpreterBrain``; this module only names it.
"""

from lmac.training.brain import InterpreterBrain

__all__ = ["InterpreterBrain"]
