"""What a mask puts where it removes the input: the reference ``R`` of ``M * L + (1 - M) * R``.

The classifier judges the masked-in input ``M * L + (1 - M) * R`` and the
masked-out input ``(1 - M) * L + M * R`` (``docs/method.md``, Masking
reference). The published L-MAC fills with silence (``R = 0``); a classifier
that gives silence a class then rewards an empty mask for that class. The
listenable interpretation stays ``M * L`` whatever the reference.

Every reference maps the input's ``log1p|STFT|`` ``[batch, frames, freq]`` to
``R`` of the same shape. A new one is one ``MaskReference`` subclass and one
line in ``MASK_REFERENCES``; ``--mask_reference NAME`` chooses it for
training and for the metrics. A run saves its reference
(``save_mask_reference``, ``MASK_REFERENCE_FILE`` in its save folder), so that
its evaluations score masks against the ``R`` it was trained with.
"""

import abc
import logging
import os

import torch

logger = logging.getLogger(__name__)

# The share of a clip's frames, per frequency, under its noise floor (``noise_floor``).
NOISE_FLOOR_QUANTILE = 0.1
# A run's reference, in its save folder.
MASK_REFERENCE_FILE = "mask_reference.pt"


class MaskReference(abc.ABC):
    """``R`` for the cells a mask removes.

    ``needs_training_set``: built from the training set's features.
    ``needs_classifier``: built with the frozen classifier's answers (``make_mask_reference``'s ``judge``).
    ``same_for_every_clip``: ``R`` does not depend on the clip, so the
    classifier's answer on it (the empty mask's input) is computed once per batch.
    """

    name = None
    needs_training_set = False
    needs_classifier = False
    same_for_every_clip = False

    @abc.abstractmethod
    def fill(self, log_mag):
        """``R`` ``[batch, frames, freq]`` for an input ``log_mag`` ``[batch, frames, freq]``."""

    def state(self):
        """What defines ``R`` beside its name: the constructor's arguments (``save_mask_reference``)."""
        return {}


class SilenceReference(MaskReference):
    """``R = 0``: the removed cells are silent (the published L-MAC).

    Example
    -------
    >>> SilenceReference().fill(torch.ones(1, 2, 3)).sum().item()
    0.0
    """

    name = "zeros"
    same_for_every_clip = True

    def fill(self, log_mag):
        return torch.zeros_like(log_mag)


class NoiseFloorReference(MaskReference):
    """The clip's own noise floor: per frequency, the ``NOISE_FLOOR_QUANTILE`` of its ``L`` over time, in every frame.

    Example
    -------
    >>> log_mag = torch.arange(10.0).view(1, 10, 1).expand(1, 10, 2)
    >>> NoiseFloorReference().fill(log_mag)[0, :2]
    tensor([[0.9000, 0.9000],
            [0.9000, 0.9000]])
    """

    name = "noise_floor"

    def fill(self, log_mag):
        floor = torch.quantile(log_mag.float(), NOISE_FLOOR_QUANTILE, dim=1, keepdim=True)  # [batch, 1, freq]
        return floor.to(log_mag.dtype).expand_as(log_mag)


class PinkNoiseReference(MaskReference):
    """A pink (``1/f`` power) magnitude spectrum at the clip's level, the same in every frame.

    Its magnitude at bin ``f >= 1`` is ``a / sqrt(f)`` (bin 0 takes bin 1's),
    with ``a`` such that its energy equals the clip's; ``R = log1p`` of it.

    Example
    -------
    >>> log_mag = torch.log1p(torch.full((1, 4, 3), 2.0))  # energy 4 per cell
    >>> reference = PinkNoiseReference().fill(log_mag)
    >>> round(torch.expm1(reference).square().sum().item(), 3), round(torch.expm1(log_mag).square().sum().item(), 3)
    (48.0, 48.0)
    """

    name = "pink"

    def fill(self, log_mag):
        num_bins = log_mag.shape[2]
        shape = 1 / torch.arange(num_bins, device=log_mag.device, dtype=torch.float32).clamp_min(1).sqrt()  # [freq]
        energy = torch.expm1(log_mag.float()).square().sum(dim=(1, 2))  # [batch]
        scale = (energy / (log_mag.shape[1] * shape.square().sum())).sqrt()  # [batch]
        return torch.log1p(scale[:, None, None] * shape).to(log_mag.dtype).expand_as(log_mag)


class MeanSpectrumReference(MaskReference):
    """The training set's mean ``log1p`` spectrum (per frequency), the same in every frame and every clip.

    Arguments
    ---------
    mean_log_spectrum : torch.Tensor
        ``[freq]`` (``training_mean_log_spectrum``).
    """

    name = "mean_spectrum"
    needs_training_set = True
    same_for_every_clip = True

    def __init__(self, mean_log_spectrum):
        self.mean_log_spectrum = mean_log_spectrum

    def state(self):
        return {"mean_log_spectrum": self.mean_log_spectrum}

    def fill(self, log_mag):
        return self.mean_log_spectrum.to(log_mag.device, log_mag.dtype).expand_as(log_mag)


class NeutralSpectrumReference(MeanSpectrumReference):
    """The training set's mean ``log1p`` spectrum, moved smoothly over frequency until the frozen classifier gives
    its input every class alike (``neutral_log_spectrum``): an empty mask's input then keeps no decision, so no
    class's sparsest faithful mask is silence. The same in every frame and every clip.

    Arguments
    ---------
    mean_log_spectrum : torch.Tensor
        ``[freq]``, the moved spectrum.
    """

    name = "neutral_spectrum"
    needs_classifier = True


# The registry of ``--mask_reference``: one line per reference.
MASK_REFERENCES = {
    reference.name: reference
    for reference in (
        SilenceReference,
        NoiseFloorReference,
        PinkNoiseReference,
        MeanSpectrumReference,
        NeutralSpectrumReference,
    )
}
# ``neutral_log_spectrum``: the knots of the smooth shift over frequency, the optimiser's steps and rate, and the
# weight of the shift's mean square beside the distance of the classifier's answer from uniform.
NEUTRAL_KNOTS = 16
NEUTRAL_STEPS = 150
NEUTRAL_LEARNING_RATE = 0.05
NEUTRAL_SHIFT_PENALTY = 0.01


def check_mask_reference(name):
    """Raises ``ValueError`` naming ``mask_reference`` and the accepted values when ``name`` is unknown."""
    if name not in MASK_REFERENCES:
        raise ValueError(f"mask_reference={name!r}; accepted values are {', '.join(MASK_REFERENCES)}.")


@torch.no_grad()
def training_mean_log_spectrum(batches, compute_log_mag):
    """The mean ``log1p`` spectrum ``[freq]`` over every frame of every clip of ``batches``.

    Arguments
    ---------
    batches : iterable of torch.Tensor
        ``[batch, samples]`` waveforms.
    compute_log_mag : callable
        ``[batch, samples]`` to ``log1p|STFT|`` ``[batch, frames, freq]``.
    """
    total, frames = None, 0
    for wavs in batches:
        log_mag = compute_log_mag(wavs).double()
        total = log_mag.sum(dim=(0, 1)) if total is None else total + log_mag.sum(dim=(0, 1))
        frames += log_mag.shape[0] * log_mag.shape[1]
    if total is None:
        raise ValueError("mask_reference=mean_spectrum needs training clips; the training set is empty.")
    return (total / frames).float()


def smooth_shift(knots, num_bins):
    """``[knots]`` values interpolated linearly onto ``num_bins`` frequencies: ``[num_bins]``."""
    return torch.nn.functional.interpolate(knots.view(1, 1, -1), size=num_bins, mode="linear", align_corners=True)[0, 0]


def neutral_log_spectrum(start, judge, steps=NEUTRAL_STEPS):
    """A ``log1p`` spectrum near ``start`` to which the classifier gives every class alike.

    It minimises the cross-entropy of the classifier's answer against the
    uniform distribution (``log n_classes`` at best) plus
    ``NEUTRAL_SHIFT_PENALTY`` times the mean square of the shift, a shift
    linear between ``NEUTRAL_KNOTS`` knots over frequency (smooth, so it
    cannot be a pattern only this classifier reads), with Adam.

    Arguments
    ---------
    start : torch.Tensor
        ``[freq]``, the spectrum it starts from (the training set's mean).
    judge : callable
        ``[freq]`` spectrum to the classifier's logits ``[clips, n_classes]`` on the empty mask's inputs it makes.
    steps : int

    Returns
    -------
    torch.Tensor
        ``[freq]``, at least 0.

    Example
    -------
    >>> weights = torch.tensor([[1.0, -1.0]]).expand(4, 2)  # class 0 for a loud spectrum, 1 for a quiet one
    >>> spectrum = neutral_log_spectrum(torch.full((4,), 2.0), lambda r: (r - 1.0).mean().view(1, 1) * weights[:1])
    >>> round(spectrum.mean().item(), 1)
    1.0
    """
    start = start.detach().float()
    knots = torch.zeros(NEUTRAL_KNOTS, device=start.device, requires_grad=True)
    optimiser = torch.optim.Adam([knots], lr=NEUTRAL_LEARNING_RATE)
    for _ in range(steps):
        shift = smooth_shift(knots, start.shape[0])
        logits = judge((start + shift).clamp_min(0))
        loss = -torch.log_softmax(logits.float(), dim=1).mean() + NEUTRAL_SHIFT_PENALTY * shift.square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (start + smooth_shift(knots.detach(), start.shape[0])).clamp_min(0)


def make_mask_reference(name, training_batches=None, compute_log_mag=None, judge=None):
    """The ``MaskReference`` named ``name``; ``mean_spectrum`` is computed from ``training_batches``, and
    ``neutral_spectrum`` moved from it with ``judge``.

    Arguments
    ---------
    name : str
        A key of ``MASK_REFERENCES``.
    training_batches : iterable of torch.Tensor or None
        ``[batch, samples]`` training waveforms (only read for a reference that ``needs_training_set``).
    compute_log_mag : callable or None
        ``[batch, samples]`` to ``[batch, frames, freq]``.
    judge : callable or None
        ``[freq]`` spectrum to the frozen classifier's logits ``[clips, n_classes]`` on the empty mask's inputs it
        makes (only called for a reference that ``needs_classifier``).
    """
    check_mask_reference(name)
    reference_class = MASK_REFERENCES[name]
    if not reference_class.needs_training_set:
        return reference_class()
    logger.info("mask_reference=%s: computing the training set's mean log-spectrum.", name)
    spectrum = training_mean_log_spectrum(training_batches, compute_log_mag)
    if reference_class.needs_classifier:
        logger.info("mask_reference=%s: moving it until the classifier gives it every class alike.", name)
        spectrum = neutral_log_spectrum(spectrum, judge)
    return reference_class(spectrum)


def save_mask_reference(reference, path):
    """Writes ``reference``'s name and ``state`` to ``path`` (through a temporary file, so no half-written file remains)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    torch.save({"name": reference.name, **reference.state()}, partial)
    os.replace(partial, path)


def load_mask_reference(path):
    """The ``MaskReference`` that ``save_mask_reference`` wrote to ``path``.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), MASK_REFERENCE_FILE)
    >>> save_mask_reference(MeanSpectrumReference(torch.tensor([1.0, 2.0])), path)
    >>> loaded = load_mask_reference(path)
    >>> loaded.name, loaded.mean_log_spectrum.tolist()
    ('mean_spectrum', [1.0, 2.0])
    """
    state = torch.load(path, map_location="cpu")
    return MASK_REFERENCES[state.pop("name")](**state)
