"""Every score of a stage in one registry, and the stage scorer that computes them.

A measure is one ``Measure`` in ``MEASURES``: its name, the function that
computes it per clip (from a ``ClipScoring``, the batch's masked output and
what else the stage has), its meaning, which way is better, what it needs and
how a stage sums its clips up (the mean, or the median for ratios in dB).
The comparison, the report, the demo's summary and the sweep read their
columns from it (``measure_names``); a new measure is one entry and its
function. Measures with no per-clip function are recorded by other code and
described here: the model-randomisation cascade and the stage values (the
profile cosines, ``worst_class_fid_in``, the L1 weight), and the scores an
interpreter adds itself (``clean_energy_share``, ``in_masks``).

``docs/method.md`` defines every measure.
"""

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable

import torch

from lmac.listening import CLEAN_CLIP_SIR_GAIN, OTHER_CLASS_SIR_GAIN, listening_scores
from lmac.masking import masked_log_magnitudes
from lmac.metrics import (
    audible_localization,
    complexity,
    energy_kept,
    event_box_scores,
    fidelity_scores,
    near_silent,
    sparseness,
)

logger = logging.getLogger(__name__)

# The tables a measure can appear in (``Measure.shown_in``): an evaluation's comparison of methods, the demo's
# ``summary.json`` (L-MAC's TEST stage), the demo's and the sweep's tables of contaminated test folds.
VIEWS = ("comparison", "summary", "noisy", "listening")
# A validation stage with at least this share of near-silent interpretations is reported as collapsed.
COLLAPSE_SILENT_SHARE = 0.5
# A class whose interpretations are at least COLLAPSE_SILENT_SHARE near-silent while its Fid-In is under this
# has collapsed: its masks went silent and lost the decision.
COLLAPSE_CLASS_FID_IN = 0.75
# A class whose interpretations are mostly near-silent, whose decision the reference alone keeps on at least this
# share of its clips, keeps its Fid-In through the reference only: a listener hears nothing of it.
SILENT_BY_REFERENCE_SHARE = 0.5


class ClassifierScores:
    """The scores that depend only on the frozen classifier and the clip, kept per clip id once computed, so that
    every VALID epoch and every method of a comparison reads them instead of computing them again.

    Only for inputs that are the clips themselves: a mixture is drawn again
    each time, and its scores with it.

    Example
    -------
    >>> shared, calls = ClassifierScores(), []
    >>> def compute():
    ...     calls.append(1)
    ...     return {"twice": 2 * torch.arange(2.0)}
    >>> [shared.values(["a", "b"], ("twice",), compute)["twice"].tolist() for _ in range(2)], len(calls)
    ([[0.0, 2.0], [0.0, 2.0]], 1)
    >>> shared.values(["b", "a"], ("twice",), compute)["twice"].tolist(), len(calls)
    ([2.0, 0.0], 1)
    """

    def __init__(self):
        self.kept = {}  # clip id to {name: value}

    def values(self, ids, names, compute):
        """``{name: [batch, ...]}`` of ``names`` for the clips ``ids``: the kept values where every clip has them,
        else ``compute()``'s, then kept. Nothing is read on the host."""
        if all(all(name in self.kept.get(clip_id, {}) for name in names) for clip_id in ids):
            return {name: torch.stack([self.kept[clip_id][name] for clip_id in ids]) for name in names}
        values = compute()
        for row, clip_id in enumerate(ids):
            self.kept.setdefault(clip_id, {}).update((name, value[row]) for name, value in values.items())
        return values


@dataclasses.dataclass
class ClipScoring:
    """What the per-clip measures of one batch read; each shared piece is computed once, when first read.

    ``output`` is the interpreter's ``MaskedOutput`` (``mask``, ``logits*``,
    ``features``, ``reference``). The other fields are None where the stage
    does not have them: ``labels`` ``[batch]`` where they are the classifier's
    classes, ``boxes`` ``[batch, frames', freq]`` the event boxes (data with
    ``meta/events.csv``), ``parts`` (``listening.SourceParts``) the input split
    into the decided sound and the rest (TEST, where the sources are known),
    ``other_class_mask`` and ``other_parts`` a class-conditional method's mask
    of the class not decided in a mixture of two classes and the input split
    for that class, ``clean_parts`` the noisy input split into the whole clean
    clip and what was mixed in (``listening.clean_clip_parts``). ``classify_log_mag`` maps a ``log1p`` magnitude
    ``[batch, frames', freq]`` to the frozen classifier's logits, in the clips'
    normalisation: the measures that ask the classifier receive it here.
    ``compute_stft`` and ``compute_istft`` are the interpreter's transforms.
    ``ids`` are the clips' ids and ``classifier_scores`` a ``ClassifierScores``
    (only where the input is the clips themselves): with both, the measures
    that depend only on the classifier and the clip
    (``Measure.classifier_only``) are computed once per clip (``shared``).
    """

    output: object
    classify_log_mag: Callable
    compute_stft: Callable
    compute_istft: Callable
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    parts: object = None
    other_class_mask: torch.Tensor | None = None
    other_parts: object = None
    clean_parts: object = None
    ids: list | None = None
    classifier_scores: ClassifierScores | None = None

    def shared(self, names, compute):
        """``compute()``'s ``{name: [batch, ...]}`` of ``names``, which depend only on the classifier and the clip:
        computed once per clip when the batch has ``ids`` and ``classifier_scores``."""
        if self.ids is None or self.classifier_scores is None:
            return compute()
        return self.classifier_scores.values(self.ids, names, compute)

    @property
    def mask(self):
        """``[batch, frames', freq]``, detached."""
        return self.output.mask.detach()

    @property
    def decisions(self):
        """The classifier's decisions on the input, ``[batch]``."""
        return self.output.logits.argmax(dim=1)

    @property
    def logits_empty(self):
        """The classifier on the empty mask's input, ``[batch, n_classes]``, or None."""
        return self.output.logits_empty

    @functools.cached_property
    def fidelity(self):
        """``metrics.fidelity_scores``: Fid-In, FF, AI, AD and AG, each ``[batch]``."""
        output = self.output
        return fidelity_scores(output.logits, output.logits_masked_in, output.logits_masked_out)

    @functools.cached_property
    def energy_kept(self):
        """``metrics.energy_kept`` of the mask, ``[batch]``."""
        return energy_kept(self.mask, self.output.features.log_mag)

    @functools.cached_property
    def silent(self):
        """1 where the interpretation is near-silent (``metrics.near_silent``), ``[batch]``."""
        return near_silent(self.energy_kept)

    @functools.cached_property
    def empty_keeps_decision(self):
        """1 where the empty mask's input gets the decision, ``[batch]``."""
        return (self.logits_empty.argmax(dim=1) == self.decisions).float()

    @functools.cached_property
    def event_box(self):
        """``metrics.event_box_scores`` of the clips' event boxes: what a perfect localiser keeps."""
        return event_box_scores(self.boxes, self.output.features.log_mag)

    @functools.cached_property
    def listening(self):
        """``listening.listening_scores`` of the mask against ``parts``, each ``[batch]``."""
        log_mag = self.output.features.log_mag
        return listening_scores(self.mask, log_mag, self.parts, self.compute_stft, self.compute_istft)

    def event_mask_keeps_decision(self):
        """``event_fid_in``: 1 where a mask exactly on the clip's event box, its other cells filled with the
        reference, keeps the classifier's decision, ``[batch]``. What a perfect localiser's Fid-In is worth: where
        it is low, the classifier does not decide from the event alone, and a faithful mask keeps more than it."""
        log_mag = self.output.features.log_mag
        masked_in, _ = masked_log_magnitudes(self.boxes.to(self.output.mask.dtype), log_mag, self.output.reference)
        return (self.classify_log_mag(masked_in).argmax(dim=1) == self.decisions).float()

    def clean_clip_sir_gain(self):
        """``sir_gain_db`` of the mask with the whole clean clip as the target and what was mixed in as the rest,
        ``[batch]``."""
        return self.sir_gain(self.mask, self.clean_parts)

    def other_class_sir_gain(self):
        """``sir_gain_db`` of ``other_class_mask`` with the class not decided as the target, ``[batch]``."""
        return self.sir_gain(self.other_class_mask, self.other_parts)

    def sir_gain(self, mask, parts):
        """``listening_scores``' ``sir_gain_db`` of ``mask`` against another split of the input, ``parts``, ``[batch]``."""
        log_mag = self.output.features.log_mag
        scores = listening_scores(mask, log_mag, parts, self.compute_stft, self.compute_istft, with_ideal=False)
        return scores["sir_gain_db"]


@dataclasses.dataclass(frozen=True)
class Measure:
    """One measure: its meaning, which way is better (``"higher"``, ``"lower"`` or ``""``), how a stage sums its
    clips up (``"mean"`` or ``"median"`` over the clips with a value), the ``ClipScoring`` fields it needs (not
    None), the tables it appears in (``VIEWS``) and ``score``, its per-clip function of a ``ClipScoring`` to a
    ``[batch]`` tensor (NaN: the clip has no value), or None where other code records it. ``classifier_only``:
    it depends only on the classifier and the clip, so it is computed once per clip (``ClipScoring.shared``)."""

    meaning: str
    better: str = ""
    summary: str = "mean"
    needs: tuple = ()
    shown_in: tuple = ("comparison", "summary")
    score: Callable | None = None
    classifier_only: bool = False


def _listening(name, meaning, better="", summary="median", shown_in=("comparison", "summary", "noisy", "listening")):
    """A measure of ``listening.listening_scores``, which computes them together."""
    return Measure(meaning, better, summary, ("parts",), shown_in, lambda clip: clip.listening[name])


def _fidelity(name, meaning, better, shown_in=("comparison", "summary")):
    """A measure of ``metrics.fidelity_scores``, which computes them together."""
    return Measure(meaning, better, shown_in=shown_in, score=lambda clip: clip.fidelity[name])


# The registry: every score a stage, a comparison or the demo reports, in the order the tables show them.
MEASURES = {
    "AI": _fidelity(
        "AI",
        "average increase: % of clips whose masked-in input raises the decision's probability",
        "higher",
        VIEWS[:3],
    ),
    "AD": _fidelity("AD", "average drop (%) of the decision's probability on the masked-in input", "lower", VIEWS[:3]),
    "AG": _fidelity("AG", "average gain (%) of the decision's probability on the masked-in input", "higher"),
    "FF": _fidelity("FF", "faithfulness: drop of the decision's probability when the mask is removed", "higher"),
    "fid_in": _fidelity(
        "fid_in", "Fid-In: share of clips whose masked-in input keeps the classifier's decision", "higher", VIEWS[:3]
    ),
    "SPS": Measure(
        "sparseness: Gini index of the mask (1 = a single cell)",
        "higher",
        shown_in=("comparison", "summary", "noisy"),
        score=lambda clip: sparseness(clip.mask),
    ),
    "COMP": Measure("complexity: entropy of the mask", "lower", score=lambda clip: complexity(clip.mask)),
    "acc": Measure(
        "classifier accuracy against the true labels",
        needs=("labels",),
        shown_in=(),
        score=lambda clip: (clip.decisions == clip.labels).float(),
    ),
    "localization": Measure(
        "mask mass inside the event's box / the box's share (1 = chance, as for a near-silent interpretation)",
        "higher",
        needs=("boxes",),
        shown_in=("comparison",),
        score=lambda clip: audible_localization(clip.mask.float(), clip.boxes, clip.silent),
    ),
    "event_fid_in": Measure(
        "share of clips whose decision a mask exactly on the event box keeps: a perfect localiser's Fid-In",
        needs=("boxes",),
        shown_in=("comparison",),
        score=ClipScoring.event_mask_keeps_decision,
        classifier_only=True,
    ),
    "event_energy_kept": Measure(
        "share of the input's energy a mask exactly on the event box keeps",
        needs=("boxes",),
        shown_in=(),
        score=lambda clip: clip.event_box["event_energy_kept"],
    ),
    "event_silent_share": Measure(
        "share of clips whose event box itself keeps under 1% of the input's energy: silent_share a perfect "
        "localiser would score",
        needs=("boxes",),
        shown_in=(),
        score=lambda clip: clip.event_box["event_silent_share"],
    ),
    "energy_kept": Measure("share of the input's energy the interpretation keeps", score=lambda clip: clip.energy_kept),
    "silent_share": Measure(
        "share of clips whose interpretation is near-silent (keeps under 1% of the input's energy)",
        "lower",
        shown_in=VIEWS,
        score=lambda clip: clip.silent,
    ),
    "empty_keeps_decision": Measure(
        "share of clips whose decision an empty mask (silence or the reference) already gets",
        needs=("logits_empty",),
        score=lambda clip: clip.empty_keeps_decision,
    ),
    "fid_in_beyond_empty": Measure(
        "share of clips whose masked-in input keeps the decision and the empty input does not",
        "higher",
        needs=("logits_empty",),
        score=lambda clip: clip.fidelity["fid_in"] * (1 - clip.empty_keeps_decision),
    ),
    "profile_cosine": Measure(
        "mean cosine between the classes' mean mask frequency profiles (1 = the same band for every class)", "lower"
    ),
    "event_profile_cosine": Measure(
        "profile_cosine of the event boxes themselves: the value of masks exactly on the events"
    ),
    "sensitivity_profile_cosine": Measure(
        "profile_cosine of the classifier's own sensitivity |d log q_c / d L| at the input, as a mask (1 = its "
        "decision moves with the same bands for every class)"
    ),
    "randomisation_similarity": Measure(
        "rank correlation of the masks with those after re-drawing the classifier from the top down to the deepest "
        "block the decoder reads (1 = unchanged)",
        "lower",
    ),
    "randomisation_floor": Measure(
        "rank correlation of the masks of two unrelated clips: the method's own prior, the floor of "
        "randomisation_similarity"
    ),
    "randomisation_step": Measure(
        "randomisation_similarity after re-drawing the classifier's layers down to the cascade's step",
        "lower",
        shown_in=(),
    ),
    "sir_gain_db": _listening(
        "sir_gain_db",
        "median gain (dB) of the decided sound over the rest, interpretation against input (0 = the all-ones mask; "
        "unheard ones not counted)",
        "higher",
    ),
    "sir_gain_6db_share": _listening(
        "sir_gain_6db_share",
        "share of clips whose interpretation gains at least 6 dB (an unheard one does not)",
        "higher",
        "mean",
    ),
    "target_kept": _listening(
        "target_kept", "median share of the decided sound's energy that the interpretation plays", "higher"
    ),
    "rest_kept": _listening(
        "rest_kept",
        "median share of the rest's energy (everything but the decided sound) that the interpretation plays",
        "lower",
    ),
    "si_sdr_db": _listening(
        "si_sdr_db",
        "median scale-invariant SDR (dB) of the interpretation against the decided sound",
        "higher",
        shown_in=("comparison", "summary"),
    ),
    "unheard_share": _listening(
        "unheard_share",
        "share of clips whose interpretation plays under 1% of the decided sound's energy (20 dB under it): "
        "nothing of it is heard",
        "lower",
        "mean",
    ),
    "scored_share": _listening(
        "scored_share",
        "share of clips the listening measures score: those decided as the class of the sound they target (a wrong "
        "decision was not made by that sound)",
        summary="mean",
    ),
    "ideal_mask_sir_gain_db": _listening(
        "ideal_mask_sir_gain_db", "median sir_gain_db of the ideal binary mask: what a mask can reach on these clips"
    ),
    OTHER_CLASS_SIR_GAIN: Measure(
        "two classes mixed: median gain (dB) of the class not decided over the rest, in the method's interpretation "
        "of that class (class-conditional methods only)",
        "higher",
        "median",
        needs=("other_parts",),
        shown_in=("comparison", "listening"),
        score=ClipScoring.other_class_sir_gain,
    ),
    CLEAN_CLIP_SIR_GAIN: Measure(
        "noise mixed in: median gain (dB) of the whole clean clip, its own background included, over what was mixed "
        "in: what the fine-tuning guidance aims at (sir_gain_db's target is the decided sound alone)",
        "higher",
        "median",
        needs=("clean_parts",),
        shown_in=("noisy", "listening"),
        score=ClipScoring.clean_clip_sir_gain,
    ),
    "clean_energy_share": Measure(
        "noisy input: mask mass on the clean sound's loud cells / their share (1 = chance)",
        "higher",
        shown_in=("noisy",),
    ),
    "localization_ratio": Measure(
        "mask mass inside the event's box / the box's share (1 = chance)", "higher", shown_in=("noisy",)
    ),
    "in_masks": Measure(
        "fine-tuning: share of clips whose masked-in input correlates with the clean clip", shown_in=()
    ),
    "worst_class_fid_in": Measure("the lowest Fid-In of a class", "higher", shown_in=()),
    "collapsed_classes": Measure(
        "how many classes' interpretations are mostly near-silent with a Fid-In under 0.75", "lower", shown_in=()
    ),
    "seconds_per_clip": Measure("seconds per clip of the whole evaluation pass", "lower", shown_in=("comparison",)),
    "loss": Measure("the interpreter's training objective", "lower", shown_in=()),
    "classifier_acc": Measure("classifier accuracy against the true labels", shown_in=()),
    "l1_weight": Measure("the L1 weight in force (adapted when l1_rate > 0)", shown_in=()),
}


def measure_names(view):
    """The names of the measures shown in ``view`` (one of ``VIEWS``), in the registry's order.

    Example
    -------
    >>> measure_names("listening")[:3]
    ['silent_share', 'sir_gain_db', 'sir_gain_6db_share']
    """
    if view not in VIEWS:
        raise ValueError(f"view={view!r}; accepted values are {', '.join(VIEWS)}.")
    return [name for name, measure in MEASURES.items() if view in measure.shown_in]


def measure_of(name):
    """The registered name and ``Measure`` of a stat's name: its own, or for ``<name>_<suffix>``
    (``AD_random_mask``, ``randomisation_step_3``) the longest registered name it starts with; ``(None, None)``
    when none fits.

    Example
    -------
    >>> measure_of("randomisation_step_3")[0], measure_of("xyz")
    ('randomisation_step', (None, None))
    """
    if name in MEASURES:
        return name, MEASURES[name]
    for known in sorted(MEASURES, key=len, reverse=True):
        if name.startswith(f"{known}_"):
            return known, MEASURES[known]
    return None, None


def clip_scores(clip):
    """Every registered per-clip measure whose needs ``clip`` has: ``{name: [batch]}``, in the registry's order; the
    ``classifier_only`` ones computed once per clip (``ClipScoring.shared``)."""
    measures = {
        name: measure
        for name, measure in MEASURES.items()
        if measure.score is not None and all(getattr(clip, need) is not None for need in measure.needs)
    }
    shared_names = tuple(name for name, measure in measures.items() if measure.classifier_only)
    shared = clip.shared(shared_names, lambda: {name: measures[name].score(clip) for name in shared_names})
    return {name: shared[name] if name in shared else measure.score(clip) for name, measure in measures.items()}


def stage_value(name, values):
    """A score's value over the stage's clips ``[clips]`` (NaN: the clip has none): the median of the clips with a
    value for a measure summed up by its median, else their mean; NaN when no clip has one. A 0-d tensor.

    Example
    -------
    >>> values = torch.tensor([1.0, float("nan"), 2.0, 9.0])
    >>> stage_value("sir_gain_db", values).item(), stage_value("fid_in", values).item()
    (2.0, 4.0)
    """
    if by_median(name):
        return values.nanmedian()
    return values.nanmean()


def by_median(name):
    """True where the stage sums the score ``name`` up by the median of its clips (``Measure.summary``)."""
    _, measure = measure_of(name)
    return measure is not None and measure.summary == "median"


def per_class_means(scores, classes, n_classes):
    """The stage value of every score per class over the clips with a value (not NaN): the mean, the median for a
    measure summed up by its median (``by_median``), and how many those clips are; no host read.

    Arguments
    ---------
    scores, classes : dict of str to torch.Tensor
        Per score name, the ``[clips]`` values and the clips' ``[clips]`` class indices (below ``n_classes``).
    n_classes : int

    Returns
    -------
    means, counts : torch.Tensor
        ``[len(scores), n_classes]`` each, rows in the order of ``scores``; a mean is 0 where its count is.

    Example
    -------
    >>> values = {"AD": torch.tensor([1.0, 3.0, float("nan"), 8.0]), "sir_gain_db": torch.tensor([1.0, 2.0, 3.0, 10.0])}
    >>> means, counts = per_class_means(values, dict.fromkeys(values, torch.tensor([0, 0, 1, 1])), 2)
    >>> means.tolist(), counts.tolist()
    ([[2.0, 8.0], [1.0, 3.0]], [[2.0, 1.0], [2.0, 2.0]])
    """
    means, counts = [], []
    for name, values in scores.items():
        present = ~values.isnan()
        count = torch.zeros(n_classes, dtype=values.dtype, device=values.device)
        count.index_add_(0, classes[name], present.to(values.dtype))
        if by_median(name):
            mean = torch.stack([values[classes[name] == label].nanmedian() for label in range(n_classes)])
            mean = torch.where(count > 0, mean, 0.0)
        else:
            total = torch.zeros(n_classes, dtype=values.dtype, device=values.device)
            mean = total.index_add_(0, classes[name], torch.where(present, values, 0.0)) / count.clamp_min(1)
        means.append(mean)
        counts.append(count)
    return torch.stack(means), torch.stack(counts)


def per_class_table(names, means, counts, n_classes):
    """``{class index: {name: mean}}`` from ``per_class_means``' flattened host values, classes with clips only.

    Example
    -------
    >>> per_class_table(["AD", "fid_in"], [5.0, 2.0, 0.0, 1.0], [1, 2, 0, 3], 2)  # fid_in has no clip of class 0
    {0: {'AD': 5.0}, 1: {'AD': 2.0, 'fid_in': 1.0}}
    """
    table = {}
    for row, name in enumerate(names):
        for label in range(n_classes):
            if counts[row * n_classes + label] > 0:
                table.setdefault(label, {})[name] = means[row * n_classes + label]
    return dict(sorted(table.items()))


def write_per_class(per_class_stats, class_names, path):
    """Writes ``per_class_means``' table as JSON at ``path``, keyed by class name; returns the named table."""
    named = {class_names[index]: stats for index, stats in per_class_stats.items()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(named, file, indent=2)
    return named


def warn_if_collapsed(stats, epoch):
    """Warns when a validation stage's ``silent_share`` reaches ``COLLAPSE_SILENT_SHARE``; returns True then.

    The masks have collapsed towards the empty mask: the interpretations are
    near-silent, whatever Fid-In says.
    """
    if stats.get("silent_share", 0.0) < COLLAPSE_SILENT_SHARE:
        return False
    logger.warning(
        "Epoch %s: the masks have collapsed: %.0f%% of the validation interpretations keep under 1%% of the "
        "input's energy (energy_kept %.3f, Fid-In %.2f, fid_in_beyond_empty %.2f). They are near-silent; see "
        "docs/method.md (Trust measures) for what to change.",
        epoch,
        100 * stats["silent_share"],
        stats["energy_kept"],
        stats["fid_in"],
        stats["fid_in_beyond_empty"],
    )
    return True


def collapsed_classes(per_class_stats):
    """The classes (indices) whose interpretations are mostly near-silent (``silent_share >= COLLAPSE_SILENT_SHARE``)
    while their Fid-In is under ``COLLAPSE_CLASS_FID_IN``.

    Example
    -------
    >>> collapsed_classes({0: {"fid_in": 1.0, "silent_share": 0.0}, 1: {"fid_in": 0.125, "silent_share": 0.875}})
    [1]
    """
    return [
        label
        for label, stats in per_class_stats.items()
        if stats.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE and stats.get("fid_in", 1.0) < COLLAPSE_CLASS_FID_IN
    ]


def silent_by_reference_classes(per_class_stats):
    """The classes (indices) whose interpretations are mostly near-silent while their Fid-In stays high because the
    reference alone keeps their decision (``empty_keeps_decision >= SILENT_BY_REFERENCE_SHARE``).

    Example
    -------
    >>> silent_by_reference_classes({0: {"fid_in": 1.0, "silent_share": 0.875, "empty_keeps_decision": 1.0},
    ...                              1: {"fid_in": 1.0, "silent_share": 0.875, "empty_keeps_decision": 0.0}})
    [0]
    """
    return [
        label
        for label, stats in per_class_stats.items()
        if stats.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE
        and stats.get("fid_in", 0.0) >= COLLAPSE_CLASS_FID_IN
        and stats.get("empty_keeps_decision", 0.0) >= SILENT_BY_REFERENCE_SHARE
    ]


def class_collapse_stats(per_class_stats):
    """``worst_class_fid_in`` (the lowest per-class Fid-In) and ``collapsed_classes`` (how many ``collapsed_classes``)
    of a stage's per-class table; nothing for a stage without Fid-In.

    Example
    -------
    >>> class_collapse_stats({0: {"fid_in": 1.0, "silent_share": 0.0}, 1: {"fid_in": 0.125, "silent_share": 0.875}})
    {'worst_class_fid_in': 0.125, 'collapsed_classes': 1}
    """
    fid_in = [stats["fid_in"] for stats in per_class_stats.values() if "fid_in" in stats]
    if not fid_in:
        return {}
    return {"worst_class_fid_in": min(fid_in), "collapsed_classes": len(collapsed_classes(per_class_stats))}


def warn_of_collapsed_classes(per_class_stats, epoch, class_names=None):
    """Warns, naming them, of the classes whose validation interpretations have collapsed (``collapsed_classes``)
    and of those that are silent but keep their decision through the reference alone
    (``silent_by_reference_classes``); returns the indices of both, in that order."""
    collapsed = collapsed_classes(per_class_stats)
    if collapsed:
        logger.warning(
            "Epoch %s: the interpretations of %d class(es) have collapsed to silence and lost the decision: %s. "
            "Listen to them; see docs/method.md (Trust measures).",
            epoch,
            len(collapsed),
            described_classes(collapsed, per_class_stats, class_names),
        )
    silent = silent_by_reference_classes(per_class_stats)
    if silent:
        logger.warning(
            "Epoch %s: the interpretations of %d class(es) are near-silent and keep the decision only because the "
            "reference alone does: %s. A listener hears nothing of them; see docs/method.md (Trust measures).",
            epoch,
            len(silent),
            described_classes(silent, per_class_stats, class_names),
        )
    return collapsed + silent


def described_classes(labels, per_class_stats, class_names):
    """The classes ``labels``, each named (``class_names``, else its index) with its numbers in words."""
    return ", ".join(
        f"{class_names[label] if class_names else label} ({collapse_description(per_class_stats[label])})"
        for label in labels
    )


def collapse_description(stats):
    """A collapsed class's numbers in words: Fid-In, near-silent share, what the reference alone keeps
    (``empty_keeps_decision``) and, with events, what a mask exactly on the event keeps (``event_fid_in``).

    Example
    -------
    >>> collapse_description({"fid_in": 0.125, "silent_share": 0.875, "empty_keeps_decision": 0.125, "event_fid_in": 0.0})
    'Fid-In 0.12, 88% near-silent; the reference alone keeps 12% of its decisions; a mask exactly on its event keeps 0% of them'
    """
    words = f"Fid-In {stats['fid_in']:.2f}, {100 * stats['silent_share']:.0f}% near-silent"
    if "empty_keeps_decision" in stats:
        words += f"; the reference alone keeps {100 * stats['empty_keeps_decision']:.0f}% of its decisions"
    if "event_fid_in" in stats:
        words += f"; a mask exactly on its event keeps {100 * stats['event_fid_in']:.0f}% of them"
    return words
