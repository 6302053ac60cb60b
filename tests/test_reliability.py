"""Reliability: resume after SIGKILL, incomplete checkpoints, two-process training, numeric safety, bf16."""

import copy
import functools
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

import lmac.data.esc50 as esc50
import lmac.recipes.train_lmac as train_lmac
import lmac.training.lmac as lmac_brain
from lmac.data.wham import MixedBatch
from lmac.features import SpectralFeatures
from lmac.training.brain import MaskedOutput
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY, COMPLETE_MARKER, CompleteCheckpointer
from lmac.training.device import optimizer_class_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "hparams", "lmac_cnn14.yaml")
INTRA_EPOCH_FLAG = "brain_intra_epoch_ckpt"  # SpeechBrain's meta key of intra-epoch checkpoints


def run_flags(data, output_folder, epochs):
    return [
        HPARAMS,
        "--data_folder",
        data["esc50_folder"],
        "--output_folder",
        str(output_folder),
        "--use_pretrained",
        "False",
        "--width",
        "0.03125",
        "--n_classes",
        "2",
        "--number_of_epochs",
        str(epochs),
        "--batch_size",
        "1",
        "--num_workers",
        "0",
        "--interpretations_per_stage",
        "1",
    ]


def log_lines(output_folder):
    return (output_folder / "train_log.txt").read_text().splitlines()


def test_an_interrupted_checkpoint_is_never_loaded(tmp_path):
    model = torch.nn.Linear(2, 2)
    checkpointer = CompleteCheckpointer(str(tmp_path), recoverables={"model": model})
    whole = checkpointer.save_checkpoint(meta={BEST_CHECKPOINT_KEY: 2.0})
    with torch.no_grad():
        model.weight.fill_(7.0)
    broken = checkpointer.save_checkpoint(meta={BEST_CHECKPOINT_KEY: 1.0})
    os.remove(broken.path / COMPLETE_MARKER)  # as if killed while writing the parameter files
    (broken.path / "model.ckpt").write_bytes(b"truncated")
    assert [c.path for c in checkpointer.list_checkpoints()] == [whole.path]
    assert checkpointer.find_checkpoint(min_key=BEST_CHECKPOINT_KEY).path == whole.path
    checkpointer.recover_if_possible()
    assert not torch.equal(model.weight, torch.full((2, 2), 7.0))
    assert broken.path.exists(), "an incomplete checkpoint is ignored, not deleted"


def test_a_checkpoint_without_the_l1_weight_resumes_from_its_configured_value(tmp_path):
    overrides = {"data_folder": None, "output_folder": str(tmp_path), "use_pretrained": False, "width": 0.03125}
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, {**overrides, "l1_rate": 0.5})
    saved = {
        name: hparams[key]
        for name, key in (("psi_model", "psi_model"), ("lr_annealing", "lr_annealing"), ("counter", "epoch_counter"))
    }
    older = CompleteCheckpointer(hparams["save_folder"], recoverables=saved)
    with torch.no_grad():
        next(hparams["psi_model"].parameters()).fill_(0.25)
    older.save_checkpoint(meta={BEST_CHECKPOINT_KEY: 1.0})
    with open(HPARAMS, encoding="utf-8") as file:
        resumed = load_hyperpyyaml(file, {**overrides, "l1_rate": 0.5})
    resumed["l1_weight"].value.fill_(99.0)
    with pytest.warns(UserWarning, match="missing a load path for l1_weight"):
        resumed["checkpointer"].recover_if_possible()
    assert torch.all(next(resumed["psi_model"].parameters()) == 0.25)
    assert float(resumed["l1_weight"].value) == 99.0  # kept as configured, not an error


def first_intra_epoch_checkpoint(save_folder):
    for name in sorted(os.listdir(save_folder)) if os.path.isdir(save_folder) else []:
        folder = os.path.join(save_folder, name)
        meta = os.path.join(folder, "CKPT.yaml")
        if os.path.isfile(os.path.join(folder, COMPLETE_MARKER)) and INTRA_EPOCH_FLAG in open(meta).read():
            return folder
    return None


def test_a_killed_run_resumes_without_repeating_epochs(tiny_data, tmp_path):
    output_folder = tmp_path / "run"
    command = [sys.executable, os.path.join(REPO, "train_lmac.py"), *run_flags(tiny_data, output_folder, 3)[0:]]
    command += ["--ckpt_interval_steps", "2", "--ckpt_interval_minutes", "0"]  # SpeechBrain allows one of the two
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while first_intra_epoch_checkpoint(output_folder / "save") is None and process.poll() is None:
        assert time.time() < deadline, "no intra-epoch checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    epochs_before = (
        [line for line in log_lines(output_folder) if line.startswith("epoch:")]
        if (output_folder / "train_log.txt").exists()
        else []
    )
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading a checkpoint from" in result.stdout + result.stderr
    lines = log_lines(output_folder)
    epochs = [int(re.match(r"epoch: (\d+)", line).group(1)) for line in lines if line.startswith("epoch:")]
    assert epochs == [1, 2, 3], f"before the kill: {epochs_before}"
    assert sum(line.startswith("Epoch loaded: ") for line in lines) == 1
    best = CompleteCheckpointer(str(output_folder / "save")).find_checkpoint(min_key=BEST_CHECKPOINT_KEY)
    valid_losses = [
        float(re.search(r"valid loss: ([-0-9.e+]+)", line).group(1)) for line in lines if line.startswith("epoch:")
    ]
    assert best.meta[BEST_CHECKPOINT_KEY] == pytest.approx(min(valid_losses), rel=0.01)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_once_and_score_the_whole_validation_set(tiny_data, tmp_path):
    output_folder = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        os.path.join(REPO, "train_lmac.py"),
        *run_flags(tiny_data, output_folder, 1),
        "--distributed_backend=gloo",
    ]
    # About 30 s; a deadlock between the processes fails here.
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = log_lines(output_folder)
    assert (
        sum(line.startswith("epoch: 1") for line in lines) == 1
        and sum(line.startswith("Epoch loaded") for line in lines) == 1
    )
    checkpoints = CompleteCheckpointer(str(output_folder / "save")).list_checkpoints()
    assert len(checkpoints) == 1
    assert len(list((output_folder / "interpretations" / "test").iterdir())) == 1
    logged = {name: float(value) for name, value in re.findall(r"valid (\w+): ([-0-9.e+]+)", lines[0])}
    # The same checkpoint, scored by one process on the whole validation fold, gives the logged numbers.
    overrides = {
        "data_folder": tiny_data["esc50_folder"],
        "output_folder": str(output_folder),
        "use_pretrained": False,
        "width": 0.03125,
        "n_classes": 2,
        "batch_size": 1,
        "num_workers": 0,
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, _ = esc50.prepare_datasets(hparams)
    brain = lmac_brain.LMAC(
        modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}, checkpointer=hparams["checkpointer"]
    )
    hparams["interpretations_per_stage"] = 0
    brain.evaluate(datasets["valid"], min_key=BEST_CHECKPOINT_KEY, test_loader_kwargs={"batch_size": 1})
    for name in ("fid_in", "AD", "SPS", "COMP"):
        assert brain.last_stage_stats[name] == pytest.approx(logged[name], rel=0.02, abs=1e-3), name


# Two gloo processes build the run's reference, rank 1 in a folder that holds one already: the case where the
# main process has written the file before another process looks. Each prints what it loaded.
REFERENCE_RACE = """
import datetime, os, sys
import torch.distributed as dist
import torch.multiprocessing as mp
from lmac.loading import build_mask_reference

def rank_main(rank, folders, rendezvous, answers):
    os.environ["RANK"] = str(rank)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    hparams = {"save_folder": folders[rank], "output_folder": folders[rank], "mask_reference": "zeros",
               "batch_size": 1, "compute_stft": None, "classifier_input": None}
    reference = build_mask_reference(hparams, train_set=None)
    dist.barrier()
    with open(os.path.join(answers, f"rank{rank}.txt"), "w") as file:
        file.write(reference.name)
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(rank_main, args=(sys.argv[1:3], sys.argv[3], sys.argv[4]), nprocs=2)
"""


def test_processes_that_see_the_saved_reference_at_different_times_do_not_deadlock(tmp_path):
    from lmac.checks import saved_mask_reference_path
    from lmac.mask_references import make_mask_reference, save_mask_reference

    empty, saved = tmp_path / "empty", tmp_path / "saved"
    empty.mkdir()
    save_mask_reference(make_mask_reference("zeros"), saved_mask_reference_path({"save_folder": str(saved)}))
    script = tmp_path / "race.py"
    script.write_text(REFERENCE_RACE)
    result = subprocess.run(
        [sys.executable, str(script), str(empty), str(saved), str(tmp_path / "rendezvous"), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Each rank writes its answer to its own file: two processes printing at once may interleave.
    answers = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert answers == ["zeros", "zeros"]
    assert os.path.isfile(saved_mask_reference_path({"save_folder": str(empty)}))


@pytest.fixture(scope="module")
def tiny_brain(tiny_data, tmp_path_factory):
    overrides = {
        "data_folder": tiny_data["esc50_folder"],
        "output_folder": str(tmp_path_factory.mktemp("brain")),
        "use_pretrained": False,
        "width": 0.03125,
        "n_classes": 2,
        "finetuning": True,
        "pretrained_interpreter": None,
        "crosscor_th": -1.0,
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    brain = lmac_brain.LMAC(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"})
    brain.modules.eval()
    return brain


@pytest.mark.parametrize("kind", ["silent", "constant", "full_scale_square"])
def test_degenerate_clips_give_finite_losses_and_metrics(tiny_brain, kind):
    samples = 80000
    waveform = {
        "silent": torch.zeros(2, samples),
        "constant": torch.ones(2, samples),
        "full_scale_square": torch.sign(torch.sin(torch.arange(samples) / 10.0)).repeat(2, 1),
    }[kind]
    batch = types.SimpleNamespace(
        id=["a", "b"],
        sig=(waveform, torch.ones(2)),
        class_string_encoded=types.SimpleNamespace(data=torch.zeros(2, 1, dtype=torch.long)),
        to=lambda *args, **kwargs: batch,
    )
    tiny_brain.on_stage_start(sb.Stage.TEST)
    tiny_brain.hparams.interpretations_per_stage = 0
    with torch.no_grad():
        output = tiny_brain.compute_forward(batch, sb.Stage.TEST)
        loss = tiny_brain.compute_objectives(output, batch, sb.Stage.TEST)
    assert torch.isfinite(loss)
    stats = tiny_brain.stage_statistics(loss.item())
    assert all(math.isfinite(value) for value in stats.values()), stats


@pytest.mark.parametrize("mask_value", [0.0, 1.0])
def test_all_zero_and_all_one_masks_with_a_certain_classifier_are_finite(tiny_brain, mask_value, monkeypatch):
    # Its hand-made 10 frames are too short for CNN14 and the ISTFT: no randomisation check, no saved interpretation.
    monkeypatch.setattr(tiny_brain.hparams, "randomisation_clips", 0)
    monkeypatch.setattr(tiny_brain.hparams, "interpretations_per_stage", 0)
    # A certain classifier's decision does not move with the mask (1 - q_c = 0): its sensitivity is zero everywhere.
    monkeypatch.setattr(tiny_brain, "classifier_sensitivity", lambda output: torch.zeros_like(output.mask))
    log_mag = torch.zeros(2, 10, 6)
    certain = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    wavs = torch.zeros(2, 100)
    output = MaskedOutput(
        mixed=MixedBatch.of_clean(wavs),
        features=SpectralFeatures(
            stft=torch.zeros(2, 10, 6, 2), log_mag=log_mag, classifier_input=torch.zeros(2, 10, 80)
        ),
        logits=certain,
        mask=torch.full((2, 10, 6), mask_value),
        reference=torch.zeros_like(log_mag),
        logits_masked_in=certain,
        logits_masked_out=certain.flip(1),
        logits_empty=certain.flip(1),
    )
    batch = types.SimpleNamespace(
        id=["a", "b"], class_string_encoded=types.SimpleNamespace(data=torch.tensor([[0], [1]]))
    )
    tiny_brain.on_stage_start(sb.Stage.TEST)
    loss = tiny_brain.compute_objectives(output, batch, sb.Stage.TEST)
    assert torch.isfinite(loss)
    assert all(math.isfinite(value) for value in tiny_brain.stage_statistics(loss.item()).values())


def test_a_non_finite_loss_stops_with_the_batch_ids_before_any_checkpoint_of_it(tiny_data, tmp_path, monkeypatch):
    # A checkpoint after every step; the loss of the third training batch is NaN.
    flags = [
        *run_flags(tiny_data, tmp_path / "run", 1)[1:],
        "--ckpt_interval_steps",
        "1",
        "--ckpt_interval_minutes",
        "0",
    ]
    batches, weights_before = [], {}
    finite_objectives = lmac_brain.LMAC.compute_objectives

    def nan_on_the_third_batch(brain, output, batch, stage):
        loss = finite_objectives(brain, output, batch, stage)
        if stage == sb.Stage.TRAIN:
            batches.append(list(batch.id))
            if len(batches) == 3:
                weights_before.update({name: value.clone() for name, value in brain.modules.psi.state_dict().items()})
                return loss * float("nan")
        return loss

    monkeypatch.setattr(lmac_brain.LMAC, "compute_objectives", nan_on_the_third_batch)
    with pytest.raises(
        FloatingPointError, match=r"TRAIN loss is nan on the batch of clips (\[.*\]); stopping"
    ) as error:
        train_lmac.main([HPARAMS, *flags])
    assert len(batches) == 3 and str(batches[2]) in str(error.value)
    # SpeechBrain keeps the latest intra-epoch checkpoint: the one after the second step, the last finite one.
    (checkpoint,) = CompleteCheckpointer(str(tmp_path / "run" / "save")).list_checkpoints()
    saved = torch.load(checkpoint.path / "psi_model.ckpt")
    assert saved.keys() == weights_before.keys()
    assert all(torch.equal(saved[name], weights_before[name]) for name in saved)


def test_bf16_training_keeps_losses_finite_and_other_files_alone(tiny_data, tmp_path):
    output_folder = tmp_path / "bf16"
    output_folder.mkdir()
    (output_folder / "notes.txt").write_text("mine")
    (tmp_path / "other_experiment").mkdir()
    (tmp_path / "other_experiment" / "keep.txt").write_text("theirs")
    train_lmac.main([*run_flags(tiny_data, output_folder, 1), "--precision", "bf16"])
    line = log_lines(output_folder)[0]
    values = [float(value) for value in re.findall(r"(?:train|valid) loss: ([-0-9.e+a-z]+)", line)]
    assert len(values) == 2 and all(math.isfinite(value) for value in values)
    assert (output_folder / "notes.txt").read_text() == "mine"
    assert os.listdir(tmp_path / "other_experiment") == ["keep.txt"]


def fail_download(url, dest, **kwargs):
    raise urllib.error.URLError("offline")


@pytest.mark.parametrize(
    "flags, error, message",
    [
        (
            ["--overlap_type", "reverb"],
            ValueError,
            r"overlap_type='reverb'; accepted values are \('mixtures', 'class_mixtures', 'white_noise', 'speech'\)",
        ),
        (
            ["--train_fold_nums", "[1, 4]"],
            ValueError,
            r"train_fold_nums=\[1, 4\] and valid_fold_nums=\[4\] share folds \[4\]",
        ),
        (["--test_fold_nums", "[6]"], ValueError, r"test_fold_nums=\[6\] has folds outside 1..5"),
        (
            ["--add_wham_noise", "True", "--wham_folder", "/no/wham_noise"],
            FileNotFoundError,
            r"Found no data in '/no/wham_noise' and the download of .* failed .* --add_wham_noise False",
        ),
    ],
)
def test_more_misconfigurations_fail_before_anything_is_written(
    tiny_data, tmp_path, monkeypatch, flags, error, message
):
    monkeypatch.setattr(esc50, "download_file", fail_download)
    output_folder = tmp_path / "run"
    with pytest.raises(error, match=message):
        train_lmac.main([*run_flags(tiny_data, output_folder, 1), *flags])
    written = [os.path.join(root, name) for root, _, files in os.walk(output_folder) for name in files]
    assert written == []


def test_a_classifier_checkpoint_with_other_outputs_is_refused(tiny_data, tmp_path):
    from speechbrain.nnet.linear import Linear

    from lmac.models.cnn14 import ScaledCnn14

    torch.save(ScaledCnn14(80, 0.03125).state_dict(), tmp_path / "embedding_model.ckpt")
    torch.save(Linear(input_size=64, n_neurons=3).state_dict(), tmp_path / "classifier.ckpt")
    flags = run_flags(tiny_data, tmp_path / "run", 1)
    flags[flags.index("--use_pretrained") + 1] = "True"
    flags += [
        "--embedding_model_path",
        str(tmp_path / "embedding_model.ckpt"),
        "--classifier_model_path",
        str(tmp_path / "classifier.ckpt"),
    ]
    with pytest.raises(ValueError, match=r"classifier.ckpt' has 3 outputs, but n_classes=2; pass --n_classes 3"):
        train_lmac.main(flags)


def adam_steps(optimizer, model, inputs, count):
    for _ in range(count):
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("first, then", [("fused", "unfused"), ("unfused", "fused")])
def test_fused_and_unfused_adam_resume_each_others_checkpoints(tmp_path, first, then):
    # CUDA runs use the fused Adam (one kernel per step); a run may resume on another machine with the other one.
    configured = functools.partial(torch.optim.Adam, lr=0.01, weight_decay=1e-6)
    kinds = {"unfused": configured, "fused": optimizer_class_for(configured, "cuda")}
    assert kinds["fused"].keywords["fused"] is True and optimizer_class_for(configured, "cpu") is configured
    torch.manual_seed(0)
    start, inputs = torch.nn.Linear(4, 3), torch.randn(8, 4)
    reference = copy.deepcopy(start)
    adam_steps(configured(reference.parameters()), reference, inputs, 4)
    before = copy.deepcopy(start)
    optimizer = kinds[first](before.parameters())
    adam_steps(optimizer, before, inputs, 2)
    Checkpointer(str(tmp_path), recoverables={"model": before, "optimizer": optimizer}).save_checkpoint()
    after = copy.deepcopy(start)
    optimizer = kinds[then](after.parameters())
    Checkpointer(str(tmp_path), recoverables={"model": after, "optimizer": optimizer}).recover_if_possible()
    adam_steps(optimizer, after, inputs, 2)
    assert torch.allclose(after.weight, reference.weight, atol=1e-6) and torch.allclose(
        after.bias, reference.bias, atol=1e-6
    )
    assert not torch.allclose(after.weight, start.weight, atol=1e-3)
