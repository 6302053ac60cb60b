"""What a listener hears, measured against what was there.

An interpretation is ``ISTFT(G * X)``: ``X`` the input's STFT and
``G = expm1(M * L) / |X|`` the effective gain of the mask ``M`` on each cell
(``L = log1p|X|``). The STFT and ISTFT are linear, so with the input split
into parts ``x = s_target + s_rest`` (the sound that made the decision and
everything else, as the mixing made them) the interpretation splits exactly
into ``y_target = ISTFT(G * S_target)`` and ``y_rest = ISTFT(G * S_rest)``,
which add up to it sample by sample. From them, per clip:

- ``sir_gain_db``: ``10 log10(|y_target|^2 / |y_rest|^2)`` minus the same ratio
  of the input resynthesised with ``G = 1``: 0 dB for the all-ones mask, and
  what a listener hears as "the rest went away and the sound stayed";
- ``target_kept``: ``|y_target|^2 / |s_target|^2``, the share of the target's
  energy the interpretation plays, and ``rest_kept``, ``|y_rest|^2 / |s_rest|^2``,
  the share of the rest's (a mask that keeps everything keeps 1 of both);
- ``si_sdr_db``: the scale-invariant SDR of the interpretation against the target;
- ``ideal_mask_sir_gain_db``: ``sir_gain_db`` of the ideal binary mask
  (``|S_target| > |S_rest|``), what a mask could reach on that clip;
- ``sir_gain_6db_share``: 1 where ``sir_gain_db`` reaches 6 dB, 0 where it does not
  or the interpretation is unheard;
- ``unheard_share``: 1 where the interpretation plays less than
  ``UNHEARD_ENERGY_SHARE`` of the target's energy, ``|y|^2 < 0.01 |s_target|^2``:
  it is more than 20 dB quieter than the sound it should play.
- ``scored_share``: 1 where the clip has a target, the sound of the class
  decided (``source_parts``): a clip the classifier gets wrong has none.

An unheard interpretation has no meaningful ratio: its ``sir_gain_db``,
``target_kept``, ``rest_kept`` and ``si_sdr_db`` are NaN (it is counted by ``unheard_share``),
and so is every score of a clip without a target (``SourceParts.scored``). It is
judged against the target, not against the input as the trust measure
``silent_share`` is: a quiet event under loud noise is a small share of its
input, and an interpretation that plays exactly that event is not silence.
The stage reports the medians of the ratios (``scoring.MEASURES``) over the clips that have a
value, and the mean of the rest.
"""

import dataclasses

import torch

from lmac.masking import crop_frames

# What ``listening_scores`` measures per clip, in the order the tables show them.
LISTENING_SCORES = (
    "sir_gain_db",
    "sir_gain_6db_share",
    "target_kept",
    "rest_kept",
    "si_sdr_db",
    "ideal_mask_sir_gain_db",
    "unheard_share",
    "scored_share",
)
# In a mixture of two classes, the gain of a class-conditional method's mask of the class not decided, with that
# class's sound as the target (``other_class_parts``): what would have made it that class.
OTHER_CLASS_SIR_GAIN = "other_class_sir_gain_db"
# With noise mixed in, the gain of the whole clean clip (its own background included) over what was mixed in
# (``clean_clip_parts``): what the fine-tuning guidance, whose target is the clean clip, aims at.
CLEAN_CLIP_SIR_GAIN = "clean_sir_gain_db"
# The measures that are NaN for an unheard interpretation, and left out of a stage whose are mostly unheard.
NAN_WHEN_UNHEARD = ("sir_gain_db", "target_kept", "rest_kept", "si_sdr_db")
# An interpretation that plays less than this share of its target's energy is unheard (``unheard_share``).
UNHEARD_ENERGY_SHARE = 0.01
# Where more than this share of a stage's (or a class's) scored clips are unheard, the medians of its heard ones
# (``NAN_WHEN_UNHEARD``) are left out (``without_mostly_unheard``).
MOSTLY_UNHEARD_SHARE = 0.5
# The gain a listener clearly hears as "the rest went away" (``sir_gain_6db_share``).
AUDIBLE_GAIN_DB = 6.0


@dataclasses.dataclass
class SourceParts:
    """The interpreted input as two parts that add up to it: ``target`` and ``rest``, ``[batch, samples]``.

    ``scored`` ``[batch]`` (boolean) is False for clips without a target: a
    clip the classifier gets wrong, or in a mixture of two classes one it gave to neither.
    """

    target: torch.Tensor
    rest: torch.Tensor
    scored: torch.Tensor


def effective_gain(mask, log_mag):
    """``G = expm1(M * L) / expm1(L)``, the gain the interpretation applies to each STFT cell.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames', freq]`` in ``[0, 1]``.
    log_mag : torch.Tensor
        ``[batch, frames, freq]``, ``frames >= frames'``: ``log1p|X|``.

    Returns
    -------
    torch.Tensor
        ``[batch, frames', freq]``, in ``[0, 1]``; ``M`` itself on silent cells (the limit at ``L = 0``).

    Example
    -------
    >>> log_mag = torch.log1p(torch.tensor([[[3.0, 0.0]]]))
    >>> effective_gain(torch.tensor([[[0.5, 0.25]]]), log_mag)  # expm1(0.5 log 4) / 3 = 1/3
    tensor([[[0.3333, 0.2500]]])
    """
    log_mag = crop_frames(log_mag, mask.shape[1]).float()
    mask = mask.float()
    magnitude = torch.expm1(log_mag)
    loud = magnitude > 0
    return torch.where(loud, torch.expm1(mask * log_mag) / torch.where(loud, magnitude, 1.0), mask)


def gained_signal(gain, spectrum, num_samples, compute_istft):
    """``ISTFT(G * S)``: a gain ``[batch, frames', freq]`` on an STFT ``[batch, frames, freq, 2]``, inverted to
    ``[batch, num_samples]``; the frames past ``frames'`` are silent."""
    gained = crop_frames(spectrum, gain.shape[1]) * gain.unsqueeze(-1)
    gained = torch.nn.functional.pad(gained, (0, 0, 0, 0, 0, spectrum.shape[1] - gain.shape[1]))
    return compute_istft(gained, sig_length=num_samples)


def interpretation_parts(gain, parts, compute_stft, compute_istft):
    """``y_target`` and ``y_rest``, each ``[batch, samples]``: the parts of ``parts`` through the gain ``G``.

    They add up to the interpretation ``ISTFT(G * X)`` of ``parts.target + parts.rest``.
    """
    spectra = (compute_stft(parts.target), compute_stft(parts.rest))
    return played_parts(gain, spectra, parts.target.shape[1], compute_istft)


def energy(signal):
    """Sum of squares over the last dimension: ``[batch, samples]`` to ``[batch]``."""
    return signal.float().square().sum(dim=-1)


def ratio_db(numerator, denominator):
    """``10 log10(numerator / denominator)`` of ``[batch]`` energies; +-inf where one of them is 0."""
    return 10 * (torch.log10(numerator) - torch.log10(denominator))


def si_sdr_db(estimate, target):
    """Scale-invariant SDR of ``estimate`` against ``target``, both ``[batch, samples]``: ``[batch]`` in dB.

    ``10 log10(|a t|^2 / |a t - e|^2)`` with ``a = <e, t> / |t|^2``; -inf for a silent estimate.

    Example
    -------
    >>> target = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    >>> si_sdr_db(0.5 * target + torch.tensor([[0.5, 0.5, 0.5, 0.5]]), target)  # |0.5 t|^2 = |noise|^2
    tensor([0.])
    """
    estimate, target = estimate.float(), target.float()
    scale = (estimate * target).sum(dim=-1, keepdim=True) / energy(target).clamp_min(
        torch.finfo(target.dtype).tiny
    ).unsqueeze(-1)
    projection = scale * target
    return ratio_db(energy(projection), energy(projection - estimate))


def ideal_binary_gain(target_spectrum, rest_spectrum, num_frames):
    """The ideal binary mask's gain ``[batch, num_frames, freq]``: 1 where the target's STFT magnitude exceeds
    the rest's (both ``[batch, frames, freq, 2]``)."""
    target_power = crop_frames(target_spectrum, num_frames).square().sum(dim=-1)
    return (target_power > crop_frames(rest_spectrum, num_frames).square().sum(dim=-1)).float()


def played_parts(gain, spectra, num_samples, compute_istft):
    """The parts ``y_target`` and ``y_rest`` ``[batch, num_samples]`` that a gain ``[batch, frames', freq]`` plays
    of the parts' STFTs ``spectra`` (target, rest)."""
    return tuple(gained_signal(gain, spectrum, num_samples, compute_istft) for spectrum in spectra)


def target_to_rest_db(played_target, played_rest):
    """``10 log10(|y_target|^2 / |y_rest|^2)`` of ``[batch, samples]`` parts: ``[batch]``."""
    return ratio_db(energy(played_target), energy(played_rest))


def listening_scores(mask, log_mag, parts, compute_stft, compute_istft, with_ideal=True):
    """The module's per-clip listening measures of a mask on an input split into ``parts``.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames', freq]`` in ``[0, 1]``.
    log_mag : torch.Tensor
        ``[batch, frames, freq]``: ``log1p|STFT|`` of ``parts.target + parts.rest``.
    parts : SourceParts
    compute_stft, compute_istft : speechbrain.processing.features.STFT, ISTFT
    with_ideal : bool
        False: the ideal binary mask is not resynthesised, and ``ideal_mask_sir_gain_db`` is left out.

    Returns
    -------
    dict of str to torch.Tensor
        ``LISTENING_SCORES``, each ``[batch]``; NaN where the module's docstring says.
    """
    num_samples = parts.target.shape[1]
    with torch.no_grad():
        gain = effective_gain(mask.detach(), log_mag)
        spectra = (compute_stft(parts.target), compute_stft(parts.rest))  # [batch, frames, freq, 2] each
        input_db = target_to_rest_db(*played_parts(torch.ones_like(gain), spectra, num_samples, compute_istft))
        played_target, played_rest = played_parts(gain, spectra, num_samples, compute_istft)
        gain_db = target_to_rest_db(played_target, played_rest) - input_db
        if with_ideal:
            ideal = played_parts(ideal_binary_gain(*spectra, gain.shape[1]), spectra, num_samples, compute_istft)
            ideal_db = target_to_rest_db(*ideal) - input_db
    heard = energy(played_target + played_rest) >= UNHEARD_ENERGY_SHARE * energy(parts.target)
    nan = torch.full_like(gain_db, float("nan"))
    of_heard = {
        "sir_gain_db": gain_db,
        "target_kept": energy(played_target) / energy(parts.target).clamp_min(1e-20),
        "rest_kept": energy(played_rest) / energy(parts.rest).clamp_min(1e-20),
        "si_sdr_db": si_sdr_db(played_target + played_rest, parts.target),
    }
    scores = {name: torch.where(parts.scored & heard, of_heard[name], nan) for name in NAN_WHEN_UNHEARD}
    scores["sir_gain_6db_share"] = torch.where(parts.scored, (heard & (gain_db >= AUDIBLE_GAIN_DB)).float(), nan)
    scores["unheard_share"] = torch.where(parts.scored, (~heard).float(), nan)
    if with_ideal:
        scores["ideal_mask_sir_gain_db"] = torch.where(parts.scored, ideal_db, nan)
    scores["scored_share"] = parts.scored.float()
    return {name: scores[name] for name in LISTENING_SCORES if name in scores}


def without_mostly_unheard(stats):
    """A stage's (or a class's) ``stats`` (name to value) without the measures of the heard clips
    (``NAN_WHEN_UNHEARD``) where more than ``MOSTLY_UNHEARD_SHARE`` of its scored clips are unheard: the median of a
    few heard clips would rank a method that is mostly silent above one that is heard.

    Example
    -------
    >>> without_mostly_unheard({"sir_gain_db": 27.0, "unheard_share": 0.99, "sir_gain_6db_share": 0.01})
    {'unheard_share': 0.99, 'sir_gain_6db_share': 0.01}
    """
    if stats.get("unheard_share", 0.0) <= MOSTLY_UNHEARD_SHARE:
        return stats
    return {name: value for name, value in stats.items() if name not in NAN_WHEN_UNHEARD}


def source_parts(mixed, event, labels, decisions):
    """The interpreted input of ``mixed`` split into the sound of the decided class and the rest.

    The clip's own sound is its event (``event``, the event stem scaled as
    ``mixed.clean``) where the data keeps stems, else the whole clean clip. In
    a mixture with a clip of a known class (``mixed.added_labels``) the target
    is the sound of the class decided, the clip's own or the added one (its
    event when kept), and clips decided as neither, or mixed with a clip of
    their own class, are not scored. Otherwise the target is the clip's own
    sound, scored where the decision is the clip's class: a wrong decision was
    not made by that sound, so what its interpretation plays has no target.

    Arguments
    ---------
    mixed : lmac.data.wham.MixedBatch
    event : torch.Tensor or None
        ``[batch, samples]``.
    labels : torch.Tensor or None
        ``[batch]``: the clips' true classes; None where they are not the
        classifier's classes (then every clip's own sound is scored).
    decisions : torch.Tensor
        ``[batch]``: the classifier's decisions.

    Returns
    -------
    SourceParts or None
        None where nothing tells the target from the rest: a clean clip whose event is not kept.
    """
    if mixed.clean_gain is None:
        if event is None:
            return None
        return parts_of(mixed, event, decided_as(labels, decisions))
    own = own_sound(mixed, event)
    if mixed.added_labels is None or labels is None:
        return parts_of(mixed, own, decided_as(labels, decisions))
    decided_other = decisions == mixed.added_labels
    target = torch.where(decided_other.unsqueeze(1), added_sound(mixed), own)
    return parts_of(mixed, target, decided_one_of_two_classes(mixed, labels, decisions))


def other_class_parts(mixed, event, labels, decisions):
    """In a mixture of two classes, the input split into the sound of the class *not* decided and the rest, with
    that class: what a class-conditional interpretation of "what would have made it that class" should play.

    Scored on the same clips as ``source_parts``: those decided as one of the two classes, of two different classes.

    Arguments
    ---------
    mixed : lmac.data.wham.MixedBatch
    event : torch.Tensor or None
        ``[batch, samples]``, the clips' event stems (None: the whole clips).
    labels : torch.Tensor or None
        ``[batch]``: the clips' true classes (None: not the classifier's).
    decisions : torch.Tensor
        ``[batch]``: the classifier's decisions.

    Returns
    -------
    parts : SourceParts or None
        None when ``mixed`` is not a mixture with clips of known classes.
    classes : torch.Tensor or None
        ``[batch]``: the class not decided (the added clip's where the clip's own was decided, else the clip's own).
    """
    if mixed.added_labels is None or labels is None:
        return None, None
    decided_own = decisions == labels
    target = torch.where(decided_own.unsqueeze(1), added_sound(mixed), own_sound(mixed, event))
    classes = torch.where(decided_own, mixed.added_labels, labels)
    return parts_of(mixed, target, decided_one_of_two_classes(mixed, labels, decisions)), classes


def clean_clip_parts(mixed, labels, decisions):
    """With noise mixed in (not a clip of a known class), the input split into the whole clean clip, its own
    background included, and what was mixed in: the split the fine-tuning guidance aims at.

    Scored where the decision is the clip's class, as ``source_parts`` scores.

    Arguments
    ---------
    mixed : lmac.data.wham.MixedBatch
    labels : torch.Tensor or None
        ``[batch]``: the clips' true classes (None: not the classifier's; every clip is scored).
    decisions : torch.Tensor
        ``[batch]``: the classifier's decisions.

    Returns
    -------
    SourceParts or None
        None for a clean input, or a mixture with clips of known classes (``source_parts`` scores those).
    """
    if mixed.clean_gain is None or mixed.added_labels is not None:
        return None
    return parts_of(mixed, own_sound(mixed, None), decided_as(labels, decisions))


def own_sound(mixed, event):
    """The clip's own sound as it is in the mixture: its event stem (or the whole clip) times the clean gain."""
    own = mixed.clean if event is None else event
    return mixed.clean_gain.unsqueeze(1) * own


def added_sound(mixed):
    """What was mixed in, as it is in the mixture: the added clip's event where kept, else all that was added."""
    return mixed.added if mixed.added_event is None else mixed.added_event


def decided_as(labels, decisions):
    """``[batch]`` boolean: the decision is the clip's class (everywhere True where ``labels`` is None)."""
    return torch.ones_like(decisions, dtype=torch.bool) if labels is None else decisions == labels


def decided_one_of_two_classes(mixed, labels, decisions):
    """``[batch]`` boolean: the clip and the added clip are of different classes and the decision is one of them."""
    decided_one = (decisions == labels) | (decisions == mixed.added_labels)
    return decided_one & (labels != mixed.added_labels)


def parts_of(mixed, target, scored):
    """``SourceParts`` of ``mixed.wavs`` with ``target`` ``[batch, samples]``, scored where ``scored`` and the target is not silent."""
    return SourceParts(target=target, rest=mixed.wavs - target, scored=scored & (energy(target) > 0))
