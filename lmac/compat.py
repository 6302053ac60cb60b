"""Saved configurations of the flat layout: exports and runs whose ``hyperparams.yaml`` names ``features.LogMelInput``,
``train_lmac.AdaptiveWeight``, ``interpreter_brain.CompleteCheckpointer`` and the like, from before the library
moved into this package.

``old_module_names()`` lets such a file load: while it is open, each old module name the file names stands for the
modules of ``OLD_MODULES`` (a registry: one line per old module). A file of the flat layout that names something
else fails in one line (``OldConfigurationError``) that says what to do.
"""

import contextlib
import importlib
import importlib.util
import re
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


# A tag of a saved configuration that names a module's attribute: ``!new:features.LogMelInput`` and the like.
TAGGED_NAME = re.compile(r"!(?:new|name|apply|module|ref):([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


def old_names_in(text):
    """The names of ``OLD_MODULES`` that a saved configuration ``text`` tags, each with the attributes it tags.

    Example
    -------
    >>> named = old_names_in("a: !new:features.LogMelInput b: !name:torch.optim.Adam c: !new:features.DeviceSTFT")
    >>> {name: sorted(attributes) for name, attributes in named.items()}
    {'features': ['DeviceSTFT', 'LogMelInput']}
    """
    named = {}
    for module, attribute in TAGGED_NAME.findall(text):
        if module in OLD_MODULES:
            named.setdefault(module, set()).add(attribute)
    return named


def saved_text(path):
    """The text of the saved configuration ``path``; empty when it is not a local file (a model hub's name)."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError:
        return ""


@contextlib.contextmanager
def old_module_names(path, text=None):
    """While open, each old name of ``OLD_MODULES`` that the saved configuration ``path`` (or its ``text``) tags
    imports its new modules, unless a module of that name can be imported and the new modules lack what the file
    names from it: nothing else changes, so a module of one's own named ``features`` or ``map_decoder`` (a family
    block's, say) still imports itself. A module of an aliased name
    imported before is put back on exit. An import error inside becomes an ``OldConfigurationError`` naming
    ``path`` only when an old name was aliased; any other is raised as it is.

    Example
    -------
    >>> from hyperpyyaml import load_hyperpyyaml
    >>> saved = "w: !new:train_lmac.AdaptiveWeight {initial: 2.0, target: 0.3, rate: 0.0}"
    >>> with old_module_names("hyperparams.yaml", saved):
    ...     weight = load_hyperpyyaml(saved)["w"]
    >>> type(weight).__module__, float(weight.value)
    ('lmac.training.lmac', 2.0)
    >>> getattr(sys.modules.get("train_lmac"), "AdaptiveWeight", None) is None  # the old name is gone again
    True
    """
    named = old_names_in(saved_text(path) if text is None else text)
    aliases = {name: alias_module(name, OLD_MODULES[name]) for name in named}
    aliases = {
        name: alias
        for name, alias in aliases.items()
        if all(hasattr(alias, key) for key in named[name]) or importlib.util.find_spec(name) is None
    }
    before = {name: sys.modules.get(name) for name in aliases}
    sys.modules.update(aliases)
    try:
        yield
    except (ImportError, AttributeError) as error:
        if not aliases:
            raise
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
