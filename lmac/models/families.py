"""Classifier families: what the recipe knows of a classifier, one YAML block per family.

A family's block (``hparams/blocks/<name>.yaml``) builds, from the recipe's
settings (``FAMILY_SETTINGS``), the objects of ``FAMILY_KEYS``:

- ``classifier_input``: maps ``log1p|STFT|`` ``[batch, frames, freq]`` to the
  classifier's input (``features.LogMelInput``, ``features.LogMagnitudeInput``);
- ``embedding_model``: maps that input to ``(embedding [batch, 1, emb_dim],
  feature_maps)``, the maps L-MAC's decoder reads (``FeatureMapEncoder``
  takes them from named layers with forward hooks);
- ``classifier``: the head, ``[batch, 1, emb_dim]`` to ``[batch, 1, n_classes]``;
- ``decoder``: a ``!name:`` of the L-MAC decoder, built only by the
  interpreter recipes (``new_decoder``), mapping ``(feature_maps, frames)``
  to mask logits ``[batch, frames, freq]``;
- ``gradcam_layer`` and ``randomisation_layers``: dotted layer names inside
  the frozen classifier (the second the model-randomisation cascade, from
  the top down to the deepest block the decoder reads); ``supports_l2i``: True for CNN14 only (L2I's
  decoder reads CNN14's maps); ``emb_dim``.

The Brain, the metrics and the mask methods read only these objects, so a
new family is one block: ``--classifier_family <name>`` (or the path of a
block of your own).
"""

import functools
import os

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.models.ECAPA_TDNN import Classifier

from lmac import HPARAMS_FOLDER
from lmac.checks import SettingError
from lmac.models.frozen_classifier import named_submodule

FAMILY_FOLDER = os.path.join(HPARAMS_FOLDER, "blocks")
# The families this recipe ships: hparams/blocks/<name>.yaml.
FAMILIES = ("cnn14", "conv2d", "ecapa", "vit")
# The recipe settings every block receives (and must declare).
FAMILY_SETTINGS = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "width", "n_classes")
FAMILY_KEYS = (
    "classifier_input",
    "embedding_model",
    "classifier",
    "decoder",
    "gradcam_layer",
    "randomisation_layers",
    "supports_l2i",
    "emb_dim",
)


def family_block_path(name):
    """The block of ``classifier_family``: ``hparams/blocks/<name>.yaml`` for a shipped family, else a path.

    Example
    -------
    >>> os.path.relpath(family_block_path("conv2d"), HPARAMS_FOLDER)
    'blocks/conv2d.yaml'
    """
    if name in FAMILIES:
        return os.path.join(FAMILY_FOLDER, f"{name}.yaml")
    if name.endswith(".yaml") and os.path.isfile(name):
        return name
    raise SettingError(
        f"classifier_family={name!r} is neither a family of this recipe {FAMILIES} nor an existing .yaml block; "
        "pass one of those names or the path of your own block (docs/usage.md: Interpreting your own classifier)."
    )


def load_family(name, settings):
    """Builds the objects of the family block ``name`` with the recipe's ``settings``.

    Arguments
    ---------
    name : str
        ``classifier_family``: a name of ``FAMILIES`` or the path of a block.
    settings : dict
        The values of ``FAMILY_SETTINGS``.

    Returns
    -------
    dict
        The block's objects; at least ``FAMILY_KEYS``.

    Raises
    ------
    lmac.checks.SettingError
        An unknown family, or a block that lacks a setting or one of ``FAMILY_KEYS``.
    """
    path = family_block_path(name)
    with open(path, encoding="utf-8") as file:
        try:
            family = load_hyperpyyaml(file, overrides=dict(settings))
        except KeyError as error:
            raise SettingError(
                f"The block {path} does not declare the setting {error}; a family block declares {FAMILY_SETTINGS}."
            ) from error
    missing = [key for key in FAMILY_KEYS if key not in family]
    if missing:
        raise SettingError(
            f"The block {path} of classifier_family={name!r} lacks {missing}; a family block defines {FAMILY_KEYS}."
        )
    return family


def family_item(family, key):
    """``family[key]``: how a recipe's YAML names one object of its family (``!apply:lmac.models.families.family_item``)."""
    return family[key]


def new_decoder(family):
    """A new L-MAC decoder of the family (its block's ``decoder``, a ``!name:``)."""
    return family["decoder"]()


def check_l2i_family(hparams):
    """Raises a ``SettingError`` naming ``classifier_family`` when it is not one L2I can interpret (CNN14 only)."""
    if not hparams["family"]["supports_l2i"]:
        raise SettingError(
            f"L2I reads CNN14's feature maps and classifier_family={hparams['classifier_family']!r} is not CNN14; "
            "interpret this family with --int_method lmac, saliency, smoothgrad, integrated_gradients or gradcam."
        )


def _keep_output(maps, name, module, inputs, output):
    """A forward hook's record of a layer's output; of a tuple (attention's ``(output, weights)``, an LSTM's
    ``(output, (h, c))``), its first element."""
    maps[name] = output[0] if isinstance(output, (tuple, list)) else output


class FeatureMapEncoder(torch.nn.Module):
    """An encoder with the outputs of its named layers as the feature maps L-MAC's decoder reads.

    The hooks live only while ``forward`` runs, so copies of the model (the
    model-randomisation check's) keep their own.

    Arguments
    ---------
    encoder : torch.nn.Module
        Maps the classifier input to its embedding: ``[batch, 1, emb_dim]``,
        or a 2-D map ``[batch, channels, frames', freq']`` that is averaged.
    feature_layers : list of str
        Dotted names inside ``encoder``; each output is ``[batch, channels, frames', freq']`` or ``[batch, channels, frames']``
        (of a layer that returns a tuple, its first element).

    Example
    -------
    >>> from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2
    >>> encoder = FeatureMapEncoder(Conv2dEncoder_v2(dim=8), ["bn3", "resblock"])
    >>> embedding, maps = encoder(torch.rand(2, 64, 129))
    >>> embedding.shape, [tuple(m.shape) for m in maps]
    (torch.Size([2, 1, 8]), [(2, 8, 8, 16), (2, 8, 4, 8)])
    """

    def __init__(self, encoder, feature_layers):
        super().__init__()
        self.encoder = encoder
        self.feature_layers = list(feature_layers)
        for layer in self.feature_layers:
            named_submodule(encoder, layer, "feature_layers")

    def forward(self, classifier_input):
        """``(embedding [batch, 1, emb_dim], feature maps in the order of feature_layers)``."""
        maps = {}
        handles = [
            self.encoder.get_submodule(layer).register_forward_hook(functools.partial(_keep_output, maps, layer))
            for layer in self.feature_layers
        ]
        try:
            output = self.encoder(classifier_input)
        finally:
            for handle in handles:
                handle.remove()
        embedding = output.mean(dim=(2, 3))[:, None] if output.dim() == 4 else output
        return embedding, tuple(maps[layer] for layer in self.feature_layers)


class ScaledCosineClassifier(Classifier):
    """SpeechBrain's ``ECAPA_TDNN.Classifier`` (cosine similarities) times ``scale``: logits for a softmax.

    Cosines lie in ``[-1, 1]``, so their softmax is nearly flat; SpeechBrain's
    recipes train them with an additive angular margin of scale 30. The
    scaled cosines are the logits that loss reads (without its margin), and
    the probabilities every metric here reads.

    Arguments
    ---------
    scale : float
    **kwargs
        As for ``speechbrain.lobes.models.ECAPA_TDNN.Classifier``.

    Example
    -------
    >>> head = ScaledCosineClassifier(scale=30.0, input_size=4, out_neurons=3)
    >>> logits = head(torch.rand(2, 1, 4))
    >>> logits.shape, bool(logits.abs().max() <= 30.0)
    (torch.Size([2, 1, 3]), True)
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def forward(self, embedding):
        """``[batch, 1, input_size]`` to ``[batch, 1, out_neurons]``."""
        return self.scale * super().forward(embedding)


def scaled_width(channels, width, multiple=8):
    """``channels * width`` rounded to a multiple of ``multiple``, at least ``multiple``.

    Example
    -------
    >>> scaled_width(256, 1), scaled_width(256, 1 / 16), scaled_width(512, 0.01)
    (256, 16, 8)
    """
    return max(multiple, multiple * int(round(channels * width / multiple)))
