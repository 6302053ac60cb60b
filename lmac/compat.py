"""Saved configurations of the flat layout: exports and runs whose ``hyperparams.yaml`` names ``features.LogMelInput``,
``train_lmac.AdaptiveWeight``, ``interpreter_brain.CompleteCheckpointer`` and the like, from before the library
moved into this package.

``old_module_names()`` lets such a file load: while it is open, each old module name stands for the modules of
``OLD_MODULES`` (a registry: one line per old module). A file that names something else fails in one line
(``OldConfigurationError``) that says what to do.
"""

import contextlib
import importlib
import sys
import types

OLD_MODULES = {
    "features": ("lmac.features",),
    "classifier_families": ("lmac.models.families",),
    "cnn14_family": ("lmac.models.cnn14",),
    "spectrogram_vit": ("lmac.models.vit",),
    "map_decoder": ("lmac.models.map_decoder",),
    "frozen_classifier": ("lmac.models.frozen_classifier",),
    "checkpointing": ("lmac.training.checkpointing",),
    "train_lmac": ("lmac.training.lmac",),
    "interpreter_brain": ("lmac.training.checkpointing", "lmac.models.frozen_classifier"),
}


class OldConfigurationError(ImportError):
    """A saved configuration names a module or class this version does not have."""


def alias_module(old_name, new_modules):
    """A module named ``old_name`` holding every public name of ``new_modules`` (dotted names, imported)."""
    alias = types.ModuleType(old_name)
    for name in new_modules:
        module = importlib.import_module(name)
        alias.__dict__.update({key: value for key, value in vars(module).items() if not key.startswith("__")})
    return alias


@contextlib.contextmanager
def old_module_names(path):
    """While open, the names of ``OLD_MODULES`` import their new modules (a module of that name imported before,
    such as the script ``train_lmac.py``, is put back on exit); an import error inside becomes an
    ``OldConfigurationError`` naming ``path``, the saved file.

    Example
    -------
    >>> from hyperpyyaml import load_hyperpyyaml
    >>> with old_module_names("hyperparams.yaml"):
    ...     weight = load_hyperpyyaml("w: !new:train_lmac.AdaptiveWeight {initial: 2.0, target: 0.3, rate: 0.0}")["w"]
    >>> type(weight).__module__, float(weight.value)
    ('lmac.training.lmac', 2.0)
    >>> getattr(sys.modules.get("train_lmac"), "AdaptiveWeight", None) is None  # the old name is gone again
    True
    """
    before = {name: sys.modules.get(name) for name in OLD_MODULES}
    sys.modules.update({name: alias_module(name, modules) for name, modules in OLD_MODULES.items()})
    try:
        yield
    except (ImportError, AttributeError) as error:
        raise OldConfigurationError(
            f"{path} names something this version does not have ({error}); export the run again with "
            "export_interpreter.py, or train it again."
        ) from error
    finally:
        for name, module in before.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
