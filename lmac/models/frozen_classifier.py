"""The frozen classifier an interpreter explains, and the copy of it that the model-randomisation check uses."""

import math
from copy import deepcopy

import torch


class FrozenClassifier(torch.nn.Module):
    """A classifier (a family's embedding model + head) that stays frozen.

    Its weights never take gradients and it stays in eval mode even when
    ``Brain`` calls ``modules.train()``; gradients still flow through it to
    its input, which is how the decoder learns.

    Arguments
    ---------
    embedding_model : torch.nn.Module
        Maps the classifier input ``[batch, frames, bins]`` to ``([batch, 1, emb_dim], feature_maps)``.
    classifier : torch.nn.Module
        Maps ``[batch, 1, emb_dim]`` to ``[batch, 1, n_classes]``.

    Example
    -------
    >>> from speechbrain.lobes.models.Cnn14 import Cnn14
    >>> from speechbrain.nnet.linear import Linear
    >>> frozen = FrozenClassifier(Cnn14(mel_bins=32, emb_dim=16, return_reps=True), Linear(n_neurons=3, input_size=16))
    >>> logits, feature_maps = frozen(torch.rand(2, 40, 32))
    >>> logits.shape, len(feature_maps), frozen.train().training
    (torch.Size([2, 3]), 4, False)
    """

    def __init__(self, embedding_model, classifier):
        super().__init__()
        self.embedding_model = embedding_model
        self.classifier = classifier
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):
        """Ignores ``mode``: the classifier always stays in eval mode."""
        return super().train(False)

    def forward(self, classifier_input):
        """Classifies ``classifier_input`` ``[batch, frames, bins]``: logits ``[batch, n_classes]`` and feature maps."""
        embedding, feature_maps = self.embedding_model(classifier_input)
        return self.classifier(embedding).squeeze(1), feature_maps


def named_submodule(model, dotted_name, setting):
    """The submodule of ``model`` at ``dotted_name``; a ``ValueError`` naming ``setting`` and some layers otherwise.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> named_submodule(model, "0", "gradcam_layer")
    Linear(in_features=2, out_features=2, bias=True)
    """
    try:
        return model.get_submodule(dotted_name)
    except AttributeError as error:
        names = [name for name, _ in model.named_modules() if name]
        raise ValueError(
            f"{setting}={dotted_name!r} is not a layer of the classifier; some of its layers: {names[-8:]}."
        ) from error


def randomised_classifier(classifier, layer_names, seed):
    """A copy of ``classifier`` whose layers ``layer_names`` have every parameter re-drawn: the model-randomisation check.

    Every submodule of those layers with a ``reset_parameters`` (convolutions,
    linear layers, batch norms) gets its initial weights again, in the order
    of ``modules()`` (as quantus' MPRT does); a parameter that keeps its
    trained value after that (a cosine head's weight, an attention's
    ``in_proj_weight``: their modules have no ``reset_parameters``) is
    re-drawn by ``redraw_parameter``. Each layer's draws come from the
    generator seeded with ``seed`` again (as quantus' MPRT seeds each layer),
    so a layer gets the same weights in every step of a cascade; the global
    random state is left as it was. ``classifier`` is not changed.

    Arguments
    ---------
    classifier : torch.nn.Module
    layer_names : list of str
        Dotted names inside ``classifier`` (``randomisation_layers``).
    seed : int

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> copy = randomised_classifier(model, ["1"], seed=0)
    >>> torch.equal(copy[0].weight, model[0].weight), torch.equal(copy[1].weight, model[1].weight)
    (True, False)
    """
    copy = deepcopy(classifier)
    with torch.random.fork_rng(devices=[]):
        for name in layer_names:
            torch.manual_seed(seed)
            layer = named_submodule(copy, name, "randomisation_layers")
            trained = {key: parameter.detach().clone() for key, parameter in layer.named_parameters()}
            for module in layer.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            for key, parameter in layer.named_parameters():
                if torch.equal(parameter, trained[key]):
                    redraw_parameter(parameter)
    return copy


@torch.no_grad()
def redraw_parameter(parameter):
    """Draws ``parameter`` afresh, in place: Glorot-uniform for a matrix or kernel, ``U(-1/sqrt(n), 1/sqrt(n))``
    for a vector of ``n`` (a bias or a norm's scale).

    Example
    -------
    >>> vector = torch.nn.Parameter(torch.zeros(4))
    >>> redraw_parameter(vector); bool((vector != 0).all()), bool((vector.abs() <= 0.5).all())
    (True, True)
    """
    if parameter.dim() >= 2:
        torch.nn.init.xavier_uniform_(parameter)
    else:
        bound = 1 / math.sqrt(max(1, parameter.numel()))
        parameter.uniform_(-bound, bound)
