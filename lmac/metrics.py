"""Interpretation metrics: pure functions on tensors, one score per example.

Fidelity of a mask to the classifier's decision (Fid-In, FF, AI, AD, AG),
its sparseness (SPS) and complexity (COMP), as ``docs/method.md`` defines
them, and how well it finds a clip's event (the localisation ratio against
the event boxes of the synthetic data's ``meta/events.csv``). Every
function keeps its tensors on their device.
"""

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch


def probabilities_of_decision(logits, logits_masked_in, logits_masked_out):
    """Softmax probabilities of the classifier's own decision ``c = argmax logits``.

    Each probability goes through exactly one softmax.

    Arguments
    ---------
    logits, logits_masked_in, logits_masked_out : torch.Tensor
        ``[batch, n_classes]``.

    Returns
    -------
    decision : torch.Tensor
        ``c``, ``[batch]``.
    p, q_in, q_out : torch.Tensor
        ``p_c``, ``q_in_c``, ``q_out_c``, each ``[batch]``.
    """
    decision = logits.argmax(dim=1, keepdim=True)
    p, q_in, q_out = (
        torch.softmax(values.float(), dim=1).gather(1, decision).squeeze(1)
        for values in (logits, logits_masked_in, logits_masked_out)
    )
    return decision.squeeze(1), p, q_in, q_out


def fidelity_scores(logits, logits_masked_in, logits_masked_out):
    """Per-example Fid-In, FF, AI, AD and AG of ``docs/method.md`` (Metrics).

    Arguments
    ---------
    logits, logits_masked_in, logits_masked_out : torch.Tensor
        ``[batch, n_classes]``: the classifier on the input, the masked-in
        and the masked-out input.

    Returns
    -------
    dict of str to torch.Tensor
        ``fid_in``, ``FF``, ``AI``, ``AD``, ``AG``, each ``[batch]``.

    Example
    -------
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    >>> masked_in = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    >>> scores = fidelity_scores(logits, masked_in, masked_in)
    >>> {name: round(value.item(), 3) for name, value in scores.items()}
    {'fid_in': 0.0, 'FF': 0.25, 'AI': 0.0, 'AD': 50.0, 'AG': 0.0}
    """
    decision, p, q_in, q_out = probabilities_of_decision(logits, logits_masked_in, logits_masked_out)
    masked_in_decision = logits_masked_in.argmax(dim=1)
    tiny = torch.finfo(p.dtype).tiny
    return {
        "fid_in": (masked_in_decision == decision).float(),
        "FF": p - q_out,
        "AI": 100.0 * (q_in > p).float(),
        "AD": 100.0 * torch.clamp(p - q_in, min=0) / p.clamp_min(tiny),
        "AG": 100.0 * torch.clamp(q_in - p, min=0) / (1 - p).clamp_min(tiny),
    }


def sparseness(mask):
    """Gini index of ``|mask|`` per example, as ``quantus.Sparseness`` computes it.

    Like quantus, ``1e-7`` is added to every value, so an all-zero mask has
    sparseness 0 (all values equal).

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, ...]``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[0, 1)``; higher is sparser.

    Example
    -------
    >>> sparseness(torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    tensor([0.7500, 0.0000])
    """
    values = _sorted_rows(mask.detach().abs().flatten(1).float())  # [batch, n], ascending
    n = values.shape[1]
    # The Gini weights 2i - n - 1 sum to zero, so quantus' offset only enters the denominator.
    # float32 products, pairwise-summed: within 1e-6 of a float64 computation, without a float64 copy.
    numerator = torch.linalg.vecdot(values, _gini_weights(n, values.device)).double()
    return (numerator / (n * (values.sum(dim=1).double() + n * 1e-7))).float()


@functools.lru_cache(maxsize=4)
def _gini_weights(n, device):
    """``2 i - n - 1`` for ranks ``i = 1..n``, float32, ``[n]``."""
    return (2 * torch.arange(1, n + 1, dtype=torch.float64, device=device) - n - 1).float()


@functools.lru_cache(maxsize=1)
def _sorting_pool():
    return ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()))


def _sorted_rows(values):
    """Each row of a float32 ``[batch, n]`` tensor sorted ascending, on its device.

    On the CPU, NumPy's vectorised float32 sort, rows in parallel threads (it
    frees the GIL), is several times faster than ``torch.sort``; on a GPU,
    ``torch.sort`` stays there. Sorting the float32 mask before the quantus
    offset is added in float64 gives the same order, so the same Gini index.
    """
    if values.device.type != "cpu":
        return torch.sort(values, dim=1).values
    return torch.from_numpy(np.stack(list(_sorting_pool().map(np.sort, values.numpy()))))


def complexity(mask):
    """Entropy of ``|mask| / sum|mask|`` per example, as ``quantus.Complexity`` computes it.

    An all-zero mask, where quantus gives NaN, is treated as uniform: ``log(n)``.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, ...]``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[0, log(n)]``; lower is simpler.

    Example
    -------
    >>> complexity(torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    tensor([0.6931, 1.3863])
    """
    values = mask.detach().abs().flatten(1).float()
    # With shares v / T: -sum (v/T) log(v/T) = log T - sum(v log v) / T. Both sums are float32
    # pairwise sums (relative error ~1e-7); 0 log 0 = 0 through the clamp to the smallest normal.
    # quantus' 1e-12 inside the log changes the result by less than n * 1e-11.
    logs = values.clamp_min(torch.finfo(values.dtype).tiny).log_()
    v_log_v = torch.linalg.vecdot(values, logs).double()
    total = values.sum(dim=1).double()  # [batch]
    entropy = torch.log(total.clamp_min(1e-300)) - v_log_v / total.clamp_min(1e-300)
    return torch.where(total > 0, entropy, math.log(values.shape[1])).float()


def event_box(num_frames, num_bins, event, hop_samples, sample_rate, n_fft):
    """Boolean ``[num_frames, num_bins]`` map of the STFT cells inside an event's box.

    Frame ``t`` is centred at ``t * hop_samples`` samples (SpeechBrain's
    centred STFT); bin ``f`` is at ``f * sample_rate / n_fft`` Hz.

    Arguments
    ---------
    num_frames, num_bins : int
    event : mapping
        ``onset_s``, ``offset_s``, ``fmin_hz``, ``fmax_hz`` (a row of ``events.csv``).
    hop_samples, sample_rate, n_fft : int

    Example
    -------
    >>> box = event_box(5, 4, {"onset_s": 0.1, "offset_s": 0.2, "fmin_hz": 10.0, "fmax_hz": 40.0}, 5, 100, 6)
    >>> box.int()  # frames at 0, 0.05, ..., 0.2 s; bins at 0, 16.7, 33.3, 50 Hz
    tensor([[0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0]], dtype=torch.int32)
    """
    times = torch.arange(num_frames) * hop_samples / sample_rate
    frequencies = torch.arange(num_bins) * sample_rate / n_fft
    in_span = (times >= event["onset_s"]) & (times <= event["offset_s"])
    in_band = (frequencies >= event["fmin_hz"]) & (frequencies <= event["fmax_hz"])
    return in_span[:, None] & in_band[None, :]


def event_boxes(events, shape, hop_samples, sample_rate, n_fft):
    """Stacked ``event_box`` maps of several clips: boolean ``[len(events), *shape]``.

    Arguments
    ---------
    events : list of mapping
        One ``events.csv`` row per clip.
    shape : tuple of int
        ``(frames, freq)`` of the masks.
    hop_samples, sample_rate, n_fft : int
    """
    return torch.stack([event_box(*shape, event, hop_samples, sample_rate, n_fft) for event in events])


def load_event_table(data_folder):
    """``<data_folder>/meta/events.csv`` indexed by clip id (file name without ``.wav``), or None when absent.

    Only the synthetic data sets of ``make_synthetic_data.py`` have it: it
    says where each clip's event is, so masks can be checked against it.
    """
    path = os.path.join(data_folder, "meta", "events.csv")
    if not os.path.isfile(path):
        return None
    events = pd.read_csv(path)
    events.index = events["filename"].str.removesuffix(".wav")
    return events


def clean_energy_region(clean_log_mag, threshold):
    """The cells where the clean input is loud: ``Lc >= threshold * max(Lc)`` per example.

    Arguments
    ---------
    clean_log_mag : torch.Tensor
        ``[batch, frames, freq]``, the clean input's ``log1p|STFT|``.
    threshold : float
        Share of the example's largest value (``bin_th``).

    Returns
    -------
    torch.Tensor
        ``[batch, frames, freq]``, boolean.
    """
    return clean_log_mag >= threshold * clean_log_mag.amax(dim=(1, 2), keepdim=True)


def clean_energy_share(mask, clean_log_mag, threshold):
    """Share of the mask's mass on the clean input's loud cells, divided by their share of the cells.

    For an input with noise mixed in: how much the mask listens to the
    clean sound rather than to the noise. 1 is chance (a uniform mask);
    ``1 / share`` is a mask exactly on the loud cells
    (``clean_energy_region``).

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames, freq]``, non-negative.
    clean_log_mag : torch.Tensor
        ``[batch, frames, freq]``, the clean input's ``log1p|STFT|``.
    threshold : float

    Returns
    -------
    torch.Tensor
        ``[batch]``.

    Example
    -------
    >>> clean = torch.zeros(1, 2, 4)
    >>> clean[0, :, 0] = 3.0  # one loud bin in every frame: a quarter of the cells
    >>> clean_energy_share(torch.ones(1, 2, 4), clean, 0.35), clean_energy_share(clean / 3, clean, 0.35)
    (tensor([1.]), tensor([4.]))
    """
    return localization_ratio(mask, clean_energy_region(clean_log_mag, threshold))


def localization_ratio(mask, box):
    """Share of the mask's mass inside the box, divided by the box's share of the cells.

    1 is chance (a uniform mask); ``1 / box share`` is a mask exactly on the box.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames, freq]``, non-negative.
    box : torch.Tensor
        ``[batch, frames, freq]``, boolean.

    Returns
    -------
    torch.Tensor
        ``[batch]``; 0 for an all-zero mask or an empty box.

    Example
    -------
    >>> box = torch.zeros(1, 4, 5, dtype=torch.bool)
    >>> box[0, :2, :2] = True
    >>> localization_ratio(torch.ones(1, 4, 5), box), localization_ratio(box.float(), box)
    (tensor([1.]), tensor([5.]))
    """
    box = box.to(mask.dtype)
    mass_inside = (mask * box).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(torch.finfo(mask.dtype).tiny)
    box_share = box.mean(dim=(1, 2))
    return torch.where(box_share > 0, mass_inside / box_share.clamp_min(torch.finfo(mask.dtype).tiny), 0.0)


def audible_localization(mask, box, silent):
    """``localization_ratio`` of the interpretations one can hear; a near-silent one (``silent``) scores 1, chance.

    A near-silent interpretation points at nothing a listener can find, so
    its few faint cells inside the box do not count as localising the event.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames, freq]``, non-negative.
    box : torch.Tensor
        ``[batch, frames, freq]``, boolean.
    silent : torch.Tensor
        ``[batch]``, 1 where the interpretation is near-silent (``near_silent``).

    Returns
    -------
    torch.Tensor
        ``[batch]``.

    Example
    -------
    >>> box = torch.zeros(2, 4, 5, dtype=torch.bool)
    >>> box[:, :2, :2] = True
    >>> audible_localization(1e-6 * box.float(), box, torch.tensor([0.0, 1.0]))
    tensor([5., 1.])
    """
    return torch.where(silent.bool(), 1.0, localization_ratio(mask, box))


# An interpretation that keeps less than this share of the input's energy is near-silent (``silent_share``).
SILENT_ENERGY_SHARE = 0.01


def energy_kept(mask, log_mag):
    """Energy of the interpretation ``expm1(M * L)`` divided by the input's ``expm1(L)``, per example.

    Measured on the STFT magnitude over the mask's frames; an input with no
    energy keeps all of it (1).

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames', freq]`` in ``[0, 1]``.
    log_mag : torch.Tensor
        ``[batch, frames, freq]``, ``frames >= frames'``: the input's ``log1p|STFT|``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[0, 1]``.

    Example
    -------
    >>> log_mag = torch.log1p(torch.tensor([[[3.0, 4.0]]]))  # energies 9 and 16
    >>> energy_kept(torch.tensor([[[0.0, 1.0]]]), log_mag), energy_kept(torch.ones(1, 1, 2), torch.zeros(1, 1, 2))
    (tensor([0.6400]), tensor([1.]))
    """
    kept, total = played_and_input_energy(mask, log_mag, dim=(1, 2))
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(total.dtype).tiny), 1.0)


def frame_energy_kept(mask, log_mag):
    """``energy_kept`` of each frame, averaged over the frames that have energy (shapes as there); ``[batch]``.

    A short loud event costs only its own frames here, and a quiet band kept
    where the event is not costs what it is in those frames, not in the whole
    clip. A clip with no energy keeps all of it (1).

    Example
    -------
    >>> log_mag = torch.log1p(torch.tensor([[[30.0, 40.0], [0.0, 1.0]]]))  # frame energies 2500 and 1
    >>> frame_energy_kept(torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]), log_mag)  # frame 1 all, frame 2 none
    tensor([0.5000])
    """
    kept, total = played_and_input_energy(mask, log_mag, dim=2)
    heard = total > 0
    shares = torch.where(heard, kept / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    frames = heard.sum(dim=1)
    return torch.where(frames > 0, shares.sum(dim=1) / frames.clamp_min(1), 1.0)


def played_and_input_energy(mask, log_mag, dim):
    """``(kept, total)``: the energies of ``expm1(M * L)`` and of ``expm1(L)`` over the mask's frames, summed over ``dim``.

    ``mask`` is ``[batch, frames', freq]``, ``log_mag`` ``[batch, frames, freq]`` with ``frames >= frames'``.
    """
    log_mag = log_mag[:, : mask.shape[1]].float()
    return torch.expm1(mask.float() * log_mag).square().sum(dim=dim), torch.expm1(log_mag).square().sum(dim=dim)


# What the energy term (``l_energy_w``) prices, by ``energy_scope``: the share of the clip's energy the
# interpretation plays, or the share of each frame's, averaged over the frames.
ENERGY_SCOPES = {"clip": energy_kept, "frame": frame_energy_kept}


def near_silent(kept):
    """1 where an interpretation keeps under ``SILENT_ENERGY_SHARE`` of its input's energy (``energy_kept``'s
    ``[batch]``), else 0: ``[batch]``."""
    return (kept < SILENT_ENERGY_SHARE).float()


def event_box_scores(boxes, log_mag):
    """What a perfect localiser's mask, exactly the event box, keeps: ``event_energy_kept`` (``energy_kept`` of the
    box) and ``event_silent_share`` (1 where that is under ``SILENT_ENERGY_SHARE``: the box itself is near-silent).

    Arguments
    ---------
    boxes : torch.Tensor
        ``[batch, frames', freq]``, boolean.
    log_mag : torch.Tensor
        ``[batch, frames, freq]``.

    Returns
    -------
    dict of str to torch.Tensor
        Each ``[batch]``.
    """
    kept = energy_kept(boxes.float(), log_mag)
    return {"event_energy_kept": kept, "event_silent_share": near_silent(kept)}


def decision_log_probability(logits, decision):
    """``log softmax(logits)_c`` per example: ``[batch, n_classes]`` logits and ``[batch]`` decisions to ``[batch]``."""
    return torch.log_softmax(logits.float(), dim=1).gather(1, decision[:, None]).squeeze(1)


def input_sensitivity(log_mag, logits_of, decision):
    """How much the decision's log-probability moves with each cell of the input: ``|d log q_c / d L|`` at the
    clip's ``log1p`` magnitude ``L``. Not weighted by how far the cell is from what a mask would put there, so it
    does not lean towards loud cells. No gradient flows out.

    Arguments
    ---------
    log_mag : torch.Tensor
        ``L``, ``[batch, frames, freq]``.
    logits_of : callable
        A ``log1p`` magnitude ``[batch, frames, freq]`` to the classifier's logits ``[batch, n_classes]``.
    decision : torch.Tensor
        ``[batch]`` class indices ``c``.

    Returns
    -------
    torch.Tensor
        ``[batch, frames, freq]``, at least 0.

    Example
    -------
    >>> logits_of = lambda log_mag: 3 * log_mag[:, 0]  # logit k reads bin k of the one frame, times 3
    >>> input_sensitivity(torch.ones(1, 1, 2), logits_of, torch.tensor([0]))  # 3 (1 - q_0), 3 q_1
    tensor([[[1.5000, 1.5000]]])
    """
    with torch.enable_grad():
        cells = log_mag.detach().clone().requires_grad_(True)
        log_q = decision_log_probability(logits_of(cells), decision)
        (gradient,) = torch.autograd.grad(log_q.sum(), cells)
    return gradient.abs()


def as_mask(weights):
    """Non-negative ``weights`` ``[batch, frames, freq]`` divided by their largest value per clip, so they range
    over ``[0, 1]`` as a mask does (all zero where ``weights`` are): a sensitivity made comparable with masks.

    Example
    -------
    >>> as_mask(torch.tensor([[[2.0, 4.0]], [[0.0, 0.0]]]))
    tensor([[[0.5000, 1.0000]],
    <BLANKLINE>
            [[0.0000, 0.0000]]])
    """
    peak = weights.flatten(1).amax(dim=1).view(-1, *([1] * (weights.dim() - 1)))
    return weights / peak.clamp_min(torch.finfo(weights.dtype).tiny)


def frequency_profile(mask):
    """A mask's frequency profile: its mean over time, ``[batch, frames, freq]`` to ``[batch, freq]``."""
    return mask.detach().float().mean(dim=1)


def class_mean_profiles(profiles, classes, n_classes):
    """The mean frequency profile of each class, and which classes have clips; no host read.

    Arguments
    ---------
    profiles : torch.Tensor
        ``[clips, freq]``.
    classes : torch.Tensor
        ``[clips]`` class indices below ``n_classes``.
    n_classes : int

    Returns
    -------
    means : torch.Tensor
        ``[n_classes, freq]`` (zero for a class without clips).
    present : torch.Tensor
        ``[n_classes]``, boolean.
    """
    sums = torch.zeros(n_classes, profiles.shape[1], dtype=profiles.dtype, device=profiles.device)
    sums.index_add_(0, classes, profiles)
    counts = torch.zeros(n_classes, dtype=profiles.dtype, device=profiles.device)
    counts.index_add_(0, classes, torch.ones_like(classes, dtype=profiles.dtype))
    return sums / counts.clamp_min(1)[:, None], counts > 0


def profile_cosine(profiles, classes, n_classes, empty_is_alike=True):
    """Mean pairwise cosine similarity between the classes' mean mask frequency profiles; no host read.

    Lower is more class-specific: 1 when every class's mask keeps the same
    bands in the same proportions. A class whose masks are all zero tells no
    class apart, so its cosine with every other class counts as 1; with
    ``empty_is_alike`` False its pairs are left out instead (a classifier's
    sensitivity that is zero everywhere, a saturated softmax, says nothing of
    its bands). NaN with fewer than two classes to pair.

    Arguments
    ---------
    profiles : torch.Tensor
        ``[clips, freq]`` (``frequency_profile`` of each clip's mask).
    classes : torch.Tensor
        ``[clips]`` class indices below ``n_classes``.
    n_classes : int
    empty_is_alike : bool

    Returns
    -------
    torch.Tensor
        0-d.

    Example
    -------
    >>> profiles = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> round(float(profile_cosine(profiles, torch.tensor([0, 0, 1, 3]), 4)), 4)  # pairs (0, 1): 0, (0, 3): 1, (1, 3): 1
    0.6667
    >>> float(profile_cosine(profiles, torch.tensor([0, 0, 1, 3]), 4, empty_is_alike=False))  # class 3 left out
    0.0
    """
    means, present = class_mean_profiles(profiles.float(), classes, n_classes)
    norms = means.norm(dim=1)
    unit = means / norms.clamp_min(torch.finfo(means.dtype).tiny)[:, None]
    empty = norms == 0
    cosine = torch.where(empty[:, None] | empty[None, :], 1.0, unit @ unit.T)
    if not empty_is_alike:
        present = present & ~empty
    eye = torch.eye(n_classes, dtype=torch.bool, device=cosine.device)
    pairs = (present[:, None] & present[None, :] & ~eye).to(cosine.dtype)
    return (cosine * pairs).sum() / pairs.sum()


def average_ranks(values):
    """Ranks ``1..n`` of each row of ``[batch, n]``, ties given their average rank (as Spearman's rho needs).

    Fixed-size tensor work only, so no host read on a GPU.

    Example
    -------
    >>> average_ranks(torch.tensor([[0.5, 0.1, 0.5, 0.9]]))
    tensor([[2.5000, 1.0000, 2.5000, 4.0000]], dtype=torch.float64)
    """
    sorted_values, order = values.sort(dim=1)
    batch, n = values.shape
    starts = torch.ones_like(sorted_values, dtype=torch.long)
    starts[:, 1:] = (sorted_values[:, 1:] != sorted_values[:, :-1]).long()
    group = starts.cumsum(dim=1) - 1  # [batch, n]: the tie group of each sorted value
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=values.device).expand(batch, n)
    first = torch.full((batch, n), n + 1.0, dtype=torch.float64, device=values.device)
    first = first.scatter_reduce(1, group, positions, "amin")
    last = torch.zeros(batch, n, dtype=torch.float64, device=values.device).scatter_reduce(1, group, positions, "amax")
    sorted_ranks = ((first + last) / 2).gather(1, group)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def centred_ranks(masks):
    """``average_ranks`` of each example's cells minus their mean: ``[batch, ...]`` to ``[batch, cells]`` float64.

    What ``spearman_similarity`` correlates; rank a mask once where it is
    compared with many (the model-randomisation cascade).
    """
    ranks = average_ranks(masks.detach().float().flatten(1))
    return ranks - ranks.mean(dim=1, keepdim=True)


def spearman_similarity(masks, other_masks, ranks=None, other_ranks=None):
    """Spearman rank correlation between two masks of each example, over all their cells.

    Two equal masks score 1 (constant ones included); a constant mask against
    a varying one scores 0.

    Arguments
    ---------
    masks, other_masks : torch.Tensor
        ``[batch, ...]``, same shape.
    ranks, other_ranks : torch.Tensor, optional
        ``centred_ranks`` of ``masks`` and of ``other_masks``, where already computed.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[-1, 1]``.

    Example
    -------
    >>> a = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    >>> spearman_similarity(torch.cat([a, a]), torch.cat([a ** 2, a.flip(1)]))
    tensor([ 1., -1.])
    """
    if masks.shape != other_masks.shape:
        raise ValueError(
            f"spearman_similarity needs two masks of one shape; got {tuple(masks.shape)} and {tuple(other_masks.shape)}."
        )
    first = centred_ranks(masks) if ranks is None else ranks
    second = centred_ranks(other_masks) if other_ranks is None else other_ranks
    scale = (first.square().sum(dim=1) * second.square().sum(dim=1)).sqrt()
    rho = (first * second).sum(dim=1) / scale.clamp_min(1e-300)
    equal = (masks.flatten(1) == other_masks.flatten(1)).all(dim=1)
    return torch.where(scale > 0, rho, equal.double()).float()
