"""Where the time of an L-MAC step goes: the step against its floor (``make bench``).

For a config (the published width-1 CNN14 at 5 s clips, or the demo's width
1/16) and a classifier family (``--classifier_family``, CNN14 by default),
on synthetic data with WHAM! noise, it measures:

- train and eval step time per clip, a 5 s file's interpretation latency and peak memory;
- the floor, on the same tensors: classifier forward on the input, decoder
  forward (+ backward), classifier forward (+ backward) on the masked-in and
  masked-out inputs, and forward on the empty mask's input where the step
  reads it (``needs_empty_logits``); with backward for training, without for evaluation;
- step / floor for train and eval, and the share of step time spent waiting
  for data (clips and WHAM! noise);
- the scorer's share of the eval step: the seconds of ``record_stage_outputs``
  (every registered measure, the profiles and the model-randomisation cascade),
  apart from the method's masks and the classifier passes; and the cascade's
  share alone (``record_randomisation_similarity``, on the first
  ``randomisation_clips`` test clips only, where the benchmark's batches fall).

It prints a table and writes JSON::

    python benchmark.py --config demo --output results/bench/demo.json
    python benchmark.py --config demo --classifier_family ecapa
    python benchmark.py --config published --iterations 2
    python benchmark.py --config published --device cuda --precision bf16

On a GPU it also reports clips per second, the peak GPU memory and the
host-device synchronisations of one train and one eval step (PyTorch's CUDA
sync debug mode); the floor's passes run under the same autocast as the steps.

``--long_file_minutes M`` measures instead the interpretation of one long
recording (a 44.1 kHz stereo FLAC of M minutes that it writes), as
``eval.py --interpret_folder`` runs it: seconds, and the peak memory of the
process, which streaming bounds by a piece of the file, not the file::

    python benchmark.py --config demo --long_file_minutes 120
"""

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from lmac import HPARAMS_FOLDER
from lmac.data.esc50 import prepare_datasets
from lmac.data.synthetic import generate
from lmac.data.wham import make_noise_stream
from lmac.inference import LMACInterpreter
from lmac.masking import crop_frames, masked_log_magnitudes
from lmac.models.families import FAMILIES
from lmac.training.device import set_weight_layout
from lmac.training.lmac import LMAC

logger = logging.getLogger(__name__)

CONFIGS = {"published": {"width": 1}, "demo": {"width": 0.0625}}
PRECISIONS = ("fp32", "bf16", "fp16")
# What PyTorch's CUDA sync debug mode warns at each operation that makes the host wait for the GPU.
SYNC_WARNING = "called a synchronizing CUDA operation"


def time_noise_waits(stream):
    """Makes ``stream.next_batch`` add its wall time to ``stream.waited``; returns the stream."""
    untimed = stream.next_batch
    stream.waited = 0.0

    def next_batch(*args, **kwargs):
        start = time.perf_counter()
        batch = untimed(*args, **kwargs)
        stream.waited += time.perf_counter() - start
        return batch

    stream.next_batch = next_batch
    return stream


def build(config, data, output_folder, batch_size, num_workers, device="cpu", precision="fp32", family="cnn14"):
    """An LMAC brain for ``config`` and the classifier ``family`` on ``device`` with WHAM! noise, its optimiser,
    and a loader of training clips.

    ``precision`` (fp32, bf16 or fp16) is SpeechBrain's ``precision`` and ``eval_precision``.
    """
    overrides = {
        "classifier_family": family,
        "data_folder": data["esc50_folder"],
        "output_folder": output_folder,
        "use_pretrained": False,
        "width": CONFIGS[config]["width"],
        "n_classes": 10,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "noise_num_workers": num_workers,
        "add_wham_noise": True,
        "wham_folder": data["wham_folder"],
        "interpretations_per_stage": 0,
    }
    with open(os.path.join(HPARAMS_FOLDER, "lmac_cnn14.yaml"), encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, _ = prepare_datasets(hparams)
    noise = time_noise_waits(make_noise_stream(hparams))
    run_opts = {"device": device, "precision": precision, "eval_precision": precision}
    brain = LMAC(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        noise_stream=noise,
    )
    brain.init_optimizers()
    loader = brain.make_dataloader(  # the recipe's loader: pinned batches on CUDA
        datasets["train"],
        sb.Stage.TRAIN,
        ckpt_prefix=None,
        shuffle=True,
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=True,
    )
    return brain, noise, loader


def timed(function):
    """Wall time of ``function()`` in seconds, and its result; GPU work it queued is waited for."""
    _wait_for_gpu()
    start = time.perf_counter()
    result = function()
    _wait_for_gpu()
    return time.perf_counter() - start, result


def _wait_for_gpu():
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def floor_times(brain, batch, train):
    """Seconds of the unavoidable work on this batch's tensors: classifier and decoder passes only.

    They run under the step's autocast (SpeechBrain's ``precision`` for
    training, ``eval_precision`` for evaluation).
    """
    with brain.training_ctx if train else brain.evaluation_ctx:
        return _floor_times(brain, batch, train)


def _floor_times(brain, batch, train):
    with torch.no_grad():
        output = brain.compute_forward(batch, sb.Stage.TEST)
    features = output.features
    seconds, (logits, feature_maps) = timed(lambda: _no_grad(brain.classify, features.classifier_input))
    num_frames = features.log_mag.shape[1]

    def decoder_pass():
        mask = torch.sigmoid(brain.modules.psi(feature_maps, num_frames))
        if train:
            mask.sum().backward()
        return mask.detach()

    decoder_seconds, mask = timed(decoder_pass if train else lambda: _no_grad(decoder_pass))
    reference = brain.mask_reference.fill(crop_frames(features.log_mag, mask.shape[1]))
    masked_in, masked_out = masked_log_magnitudes(mask, features.log_mag, reference)
    inputs = [brain.input_from_log_mag(part, features.log_mag).detach() for part in (masked_in, masked_out)]
    reads_empty = brain.needs_empty_logits(sb.Stage.TRAIN if train else sb.Stage.TEST)

    def masked_passes():
        for masked_input in inputs:
            masked_input.requires_grad_(train)
            logits_masked, _ = brain.classify(masked_input)
            if train:
                logits_masked.sum().backward()

    masked_seconds, _ = timed(masked_passes if train else lambda: _no_grad(masked_passes))
    empty_seconds = timed(lambda: brain.classify_empty(reference.detach(), features.log_mag))[0] if reads_empty else 0.0
    brain.optimizer.zero_grad(set_to_none=True)
    return seconds + decoder_seconds + masked_seconds + empty_seconds


def count_synchronisations(function):
    """How many times ``function()`` made the host wait for the GPU (CUDA sync debug mode, ``warn``).

    Each such operation (a copy to the host, ``.item()``, a copy from
    pageable host memory, an explicit synchronisation) warns once.
    """
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum(SYNC_WARNING in str(warning.message) for warning in caught)


def _forever(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def _no_grad(function, *args):
    with torch.no_grad():
        return function(*args)


def timing_calls(brain, name):
    """Wraps the method ``name`` of ``brain`` so that each call's seconds are appended to the list it returns."""
    method, seconds = getattr(brain, name), []

    def timed_method(*args, **kwargs):
        taken, result = timed(lambda: method(*args, **kwargs))
        seconds.append(taken)
        return result

    setattr(brain, name, timed_method)
    return seconds


def measure_steps(brain, noise, loader, iterations, train):
    """Median step seconds, median floor seconds, the data-wait share over ``iterations`` batches, syncs per step and
    the shares of the step of the scorer and of the model-randomisation cascade within it (evaluation only; None in
    training).

    The synchronisations are counted on one more step, untimed, on CUDA
    only (None elsewhere).
    """
    steps, floors, waits = [], [], []
    scoring = None if train else timing_calls(brain, "record_stage_outputs")
    cascade = None if train else timing_calls(brain, "record_randomisation_similarity")
    batches = _forever(loader)
    brain.modules.train() if train else brain.modules.eval()
    brain.on_stage_start(sb.Stage.TRAIN if train else sb.Stage.TEST)
    for _ in range(iterations + 1):  # the first one warms up
        noise.waited = 0.0
        loader_wait, batch = timed(lambda: next(batches))
        if train:
            step, _ = timed(lambda: brain.fit_batch(batch))
        else:
            step, _ = timed(lambda: brain.evaluate_batch(batch, sb.Stage.TEST))
        steps.append(step + loader_wait)
        waits.append(loader_wait + noise.waited)
        floors.append(floor_times(brain, batch, train))
    steps, floors, waits = steps[1:], floors[1:], waits[1:]
    shares = None if train else tuple(sum(part[1 : iterations + 1]) / sum(steps) for part in (scoring, cascade))
    syncs = None
    if torch.device(brain.device).type == "cuda":
        batch = next(batches)
        syncs = count_synchronisations(
            (lambda: brain.fit_batch(batch)) if train else (lambda: brain.evaluate_batch(batch, sb.Stage.TEST))
        )
    return statistics.median(steps), statistics.median(floors), sum(waits) / sum(steps), syncs, shares


def interpretation_latency(brain, folder):
    """Seconds to interpret a 5 s file, without and with writing its outputs (median of 3)."""
    path = os.path.join(folder, "five_seconds.wav")
    sf.write(path, torch.randn(80000).numpy() * 0.1, 16000)
    run_opts = {
        "device": str(brain.device),
        "precision": brain.eval_precision,
    }  # the brain's models, as eval.py uses them
    interpreter = LMACInterpreter(modules=brain.modules, hparams=vars(brain.hparams), run_opts=run_opts)
    compute = []
    for _ in range(3):
        seconds, _ = timed(lambda: interpreter.interpret_file(path))
        compute.append(seconds)
    with_outputs, _ = timed(lambda: interpreter.interpret_file(path, savedir=folder))
    return statistics.median(compute), with_outputs


def peak_memory_mb():
    """Largest resident set of this process or of its children (DataLoader workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def gpu_measures(device, train_step, eval_step, batch_size):
    """Clips per second and peak GPU memory (MB) on a CUDA ``device``; empty elsewhere."""
    if torch.device(device).type != "cuda":
        return {}
    return {
        "gpu": torch.cuda.get_device_name(device),
        "train_clips_per_s": batch_size / train_step,
        "eval_clips_per_s": batch_size / eval_step,
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
    }


def run(
    config,
    iterations,
    batch_size,
    num_workers,
    data_folder,
    clips_per_class,
    device="cpu",
    precision="fp32",
    family="cnn14",
):
    """Measures ``config`` of the classifier ``family`` on ``device`` at ``precision``; returns the JSON-ready results."""
    data = generate(data_folder, n_classes=10, clips_per_class=clips_per_class, noise_files=(10, 2, 2), seed=11)
    with tempfile.TemporaryDirectory() as scratch:
        brain, noise, loader = build(config, data, scratch, batch_size, num_workers, device, precision, family)
        train_step, train_floor, train_wait, train_syncs, _ = measure_steps(brain, noise, loader, iterations, True)
        set_weight_layout(brain.modules, forward_only=True)  # as eval.py and the test after training run
        eval_step, eval_floor, eval_wait, eval_syncs, shares = measure_steps(brain, noise, loader, iterations, False)
        latency, latency_with_outputs = interpretation_latency(brain, scratch)
    return {
        "config": config,
        "classifier_family": family,
        "width": CONFIGS[config]["width"],
        "device": device,
        "precision": precision,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "train_step_s_per_clip": train_step / batch_size,
        "train_floor_s_per_clip": train_floor / batch_size,
        "train_step_over_floor": train_step / train_floor,
        "train_data_wait_share": train_wait,
        "eval_step_s_per_clip": eval_step / batch_size,
        "eval_floor_s_per_clip": eval_floor / batch_size,
        "eval_step_over_floor": eval_step / eval_floor,
        "eval_data_wait_share": eval_wait,
        "eval_scoring_share": shares[0],
        "eval_randomisation_share": shares[1],
        "interpret_5s_latency_s": latency,
        "interpret_5s_with_outputs_s": latency_with_outputs,
        "peak_memory_mb": peak_memory_mb(),
        **gpu_measures(device, train_step, eval_step, batch_size),
        **({} if train_syncs is None else {"train_syncs_per_step": train_syncs, "eval_syncs_per_step": eval_syncs}),
    }


def write_long_recording(path, minutes, rate=44100, block_s=60):
    """Writes a stereo FLAC of ``minutes``: a tone gliding between 200 Hz and 4 kHz over noise, a minute at a time."""
    generator = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16") as file:
        for block in range(int(np.ceil(minutes * 60 / block_s))):
            seconds = min(block_s, minutes * 60 - block * block_s)
            times = block * block_s + np.arange(int(seconds * rate)) / rate
            frequency = 200 * 20 ** (0.5 + 0.5 * np.sin(2 * np.pi * times / 47))
            tone = 0.3 * np.sin(2 * np.pi * np.cumsum(frequency) / rate)
            file.write(np.stack([tone, tone], axis=1) + 0.02 * generator.standard_normal((times.shape[0], 2)))


def long_file_measures(config, minutes, device, scratch):
    """Interprets a long recording with outputs, as ``eval.py --interpret_folder`` does; returns the measures."""
    path = os.path.join(scratch, f"recording_{minutes}min.flac")
    write_long_recording(path, minutes)
    overrides = {
        "data_folder": None,
        "output_folder": scratch,
        "use_pretrained": False,
        "width": CONFIGS[config]["width"],
        "n_classes": 10,
    }
    with open(os.path.join(HPARAMS_FOLDER, "lmac_cnn14.yaml"), encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    interpreter = LMACInterpreter(modules=hparams["modules"], hparams=hparams, run_opts={"device": device})
    set_weight_layout(interpreter.mods, forward_only=True)
    before = peak_memory_mb()
    seconds, result = timed(
        lambda: interpreter.interpret_file(path, savedir=os.path.join(scratch, "out"), keep_tensors=False)
    )
    return {
        "config": config,
        "device": device,
        "recording_minutes": minutes,
        "interpret_s": seconds,
        "real_time_factor": seconds / (minutes * 60),
        "windows": len(result.timeline),
        "peak_memory_mb_before": before,
        "peak_memory_mb": peak_memory_mb(),
        "interpretation_mb": os.path.getsize(result.outputs["interpretation"]) / 2**20,
    }


def table(results):
    """The results as a two-column markdown table."""
    rows = [
        f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in results.items()
    ]
    return "\n".join(["| measure | value |", "|---|---|", *rows])


def default_output(config, device, precision, family="cnn14"):
    """``results/bench/<config>.json`` for CNN14 in fp32 on the CPU; another family adds ``_<family>``, another
    device or precision ``_<device>_<precision>``.

    Example
    -------
    >>> default_output("published", "cuda:0", "bf16"), default_output("demo", "cpu", "fp32", "ecapa")
    ('results/bench/published_cuda0_bf16.json', 'results/bench/demo_ecapa.json')
    """
    suffix = "" if family == "cnn14" else f"_{family}"
    suffix += "" if (device, precision) == ("cpu", "fp32") else f"_{device.replace(':', '')}_{precision}"
    return os.path.join("results", "bench", f"{config}{suffix}.json")


def main(argv=None):
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="demo")
    parser.add_argument("--classifier_family", choices=FAMILIES, default="cnn14")
    parser.add_argument("--iterations", type=int, default=5, help="measured batches per stage (after one warm-up)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--clips_per_class", type=int, default=20, help="3 in 5 are training clips")
    parser.add_argument("--data_folder", default=None, help="default data/bench_<clips_per_class>")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="autocast dtype of train and eval steps"
    )
    parser.add_argument(
        "--output", default=None, help="JSON file (default results/bench/<config>[_<device>_<precision>].json)"
    )
    parser.add_argument("--long_file_minutes", type=float, default=None, help="measure one long recording instead")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is visible to PyTorch here; use --device cpu.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_folder = args.data_folder or os.path.join("data", f"bench_{args.clips_per_class}")
    if args.long_file_minutes is not None:
        with tempfile.TemporaryDirectory() as scratch:
            results = long_file_measures(args.config, args.long_file_minutes, args.device, scratch)
        default = os.path.join("results", "bench", f"{args.config}_long_file_{args.long_file_minutes:g}min.json")
    else:
        results = run(
            args.config,
            args.iterations,
            args.batch_size,
            args.num_workers,
            data_folder,
            args.clips_per_class,
            args.device,
            args.precision,
            args.classifier_family,
        )
        default = default_output(args.config, args.device, args.precision, args.classifier_family)
    output = args.output or default
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    logger.info("Benchmark (%s, %s), also in %s:\n%s", args.config, args.classifier_family, output, table(results))
    return results


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    main(sys.argv[1:])
