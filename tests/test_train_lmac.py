"""The L-MAC recipe for real: CLI runs on synthetic data, start-up checks, a frozen classifier."""

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys

import matplotlib.pyplot as plt
import pandas
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lmac.cli as cli
import lmac.loading as loading
import lmac.recipes.train_lmac as train_lmac
import lmac.training.lmac as lmac_brain
from lmac.checks import SettingError, check_resumes_the_same_run
from lmac.data.esc50 import prepare_datasets
from lmac.reporting.curves import read_train_log
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "hparams", "lmac_cnn14.yaml")


def small_run_flags(data, output_folder):
    return [
        "--data_folder",
        data["esc50_folder"],
        "--output_folder",
        str(output_folder),
        "--use_pretrained",
        "False",
        "--width",
        "0.0625",
        "--n_classes",
        "2",
        "--number_of_epochs",
        "1",
        "--batch_size",
        "2",
        "--num_workers",
        "0",
        "--add_wham_noise",
        "True",
        "--wham_folder",
        data["wham_folder"],
        "--noise_num_workers",
        "0",
        "--interpret_period",
        "1",
        "--interpretations_per_stage",
        "2",
    ]


def run_cli(flags):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_lmac.py"), HPARAMS, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def logged_stats(line):
    """``{'valid loss': 17.9, ...}`` from one line of a SpeechBrain FileTrainLogger file."""
    return {
        name.strip(): float(value)
        for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_ ]*): ([-+0-9.e]+|nan|inf)", line)
    }


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    output_folder = tmp_path_factory.mktemp("run")
    log = run_cli([*small_run_flags(tiny_data, output_folder), "--use_tensorboard", "True"])
    return output_folder, log


def test_a_short_run_logs_finite_losses_and_every_metric(trained_run, tiny_data):
    output_folder, _ = trained_run
    lines = (output_folder / "train_log.txt").read_text().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch: 1")]
    test_lines = [line for line in lines if line.startswith("Epoch loaded")]
    assert len(epoch_lines) == 1 and len(test_lines) == 1
    valid, test = logged_stats(epoch_lines[0]), logged_stats(test_lines[0])
    for stage, stats in (("valid", valid), ("test", test)):
        for name in (BEST_CHECKPOINT_KEY, "fid_in", "FF", "AI", "AD", "AG", "SPS", "COMP", "acc"):
            assert math.isfinite(stats[f"{stage} {name}"]), (stage, name)
    assert math.isfinite(valid["train loss"])
    for name in ("energy_kept", "silent_share", "empty_keeps_decision", "fid_in_beyond_empty", "profile_cosine"):
        assert math.isfinite(valid[f"valid {name}"]) and math.isfinite(test[f"test {name}"]), name
    assert "test randomisation_similarity" in test and "valid randomisation_similarity" not in valid
    assert valid["valid l1_weight"] == pytest.approx(6.4)  # the YAML's reg_w_l1, fixed with l1_rate 0
    per_class = json.loads((output_folder / "test_per_class.json").read_text(encoding="utf-8"))
    categories = pandas.read_csv(os.path.join(tiny_data["esc50_folder"], "meta", "esc50.csv"))
    assert set(per_class) <= set(categories["category"]) and all("energy_kept" in row for row in per_class.values())
    # The tiny test fold holds one clip of each class: the stage's means are the classes' means.
    for name in ("fid_in", "AD", "energy_kept", "silent_share"):
        class_mean = sum(row[name] for row in per_class.values()) / len(per_class)
        assert test[f"test {name}"] == pytest.approx(class_mean, rel=1e-2, abs=1e-3), name  # the log rounds
    assert test["test worst_class_fid_in"] == pytest.approx(min(row["fid_in"] for row in per_class.values()), abs=1e-2)
    assert valid["valid clean_energy_share"] >= 0  # WHAM! is mixed in


def test_training_curves_and_tensorboard_logs_follow_the_training_log(trained_run):
    output_folder, _ = trained_run
    rows = read_train_log(output_folder / "train_log.txt")
    assert [row["epoch"] for row in rows] == [1.0]
    image = plt.imread(output_folder / "training_curves.png")
    assert image.shape[0] > 200 and image.shape[1] > 800  # a loss panel and three metric panels a line
    events = EventAccumulator(str(output_folder / "tb_logs"))
    events.Reload()
    logged = {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert logged["loss/train"] == pytest.approx([rows[0]["train loss"]], rel=1e-2)
    assert logged["fid_in/valid"] == pytest.approx([rows[0]["valid fid_in"]], rel=1e-2, abs=1e-3)
    assert len(logged["AD/test"]) == 1 and logged["epoch"] == [1.0]


def test_tensorboard_without_the_package_is_a_clear_error(tiny_data, tmp_path, monkeypatch):
    def not_installed(save_dir):
        raise ImportError("No module named 'tensorboard'")

    monkeypatch.setattr(cli, "FlushedTensorboardLogger", not_installed)
    with pytest.raises(
        ImportError, match=r"use_tensorboard=True needs TensorBoard.*pip install tensorboard.*--use_tensorboard False"
    ):
        train_lmac.main([HPARAMS, *small_run_flags(tiny_data, tmp_path / "run"), "--use_tensorboard", "True"])
    assert not (tmp_path / "run" / "train_log.txt").exists()


def test_the_best_checkpoint_is_kept_by_a_logged_key_as_a_plain_float(trained_run):
    output_folder, _ = trained_run
    checkpoint = Checkpointer(str(output_folder / "save")).find_checkpoint(min_key=BEST_CHECKPOINT_KEY)
    assert checkpoint is not None
    assert type(checkpoint.meta[BEST_CHECKPOINT_KEY]) is float
    epoch_line = next(
        line for line in (output_folder / "train_log.txt").read_text().splitlines() if line.startswith("epoch")
    )
    assert checkpoint.meta[BEST_CHECKPOINT_KEY] == pytest.approx(
        logged_stats(epoch_line)[f"valid {BEST_CHECKPOINT_KEY}"], rel=0.01
    )
    assert {"psi_model.ckpt", "optimizer.ckpt", "lr_annealing.ckpt", "counter.ckpt"} <= set(os.listdir(checkpoint.path))


def test_interpretations_are_listenable_and_as_long_as_the_input(trained_run):
    output_folder, _ = trained_run
    for stage in ("valid_epoch1", "test"):
        clips = sorted(glob.glob(str(output_folder / "interpretations" / stage / "*")))
        assert len(clips) == 2, stage
        for clip in clips:
            original, rate = sf.read(os.path.join(clip, "original.wav"))
            interpretation, interpretation_rate = sf.read(os.path.join(clip, "interpretation.wav"))
            assert rate == interpretation_rate == 16000
            assert original.shape == interpretation.shape == (80000,)
            assert 0 < abs(interpretation).max() <= abs(original).max() * 1.5
            assert os.path.getsize(os.path.join(clip, "spectrogram.png")) > 10_000


def test_test_only_reuses_the_checkpoint_of_the_run(trained_run, tiny_data):
    output_folder, _ = trained_run
    checkpoint = Checkpointer(str(output_folder / "save")).find_checkpoint(min_key=BEST_CHECKPOINT_KEY)
    log = run_cli([*small_run_flags(tiny_data, output_folder), "--test_only", "True"])
    assert f"Loading a checkpoint from {checkpoint.path}" in log
    lines = (output_folder / "train_log.txt").read_text().splitlines()
    assert sum(line.startswith("epoch:") for line in lines) == 1
    first_test, second_test = [logged_stats(line) for line in lines if line.startswith("Epoch loaded")]
    assert second_test["test fid_in"] == first_test["test fid_in"]


def test_a_run_trained_with_other_settings_is_not_resumed_as_this_one(trained_run, tiny_data, tmp_path):
    output_folder, _ = trained_run
    shutil.copytree(output_folder, tmp_path / "run")
    settings = (tmp_path / "run" / "hyperparams.yaml").read_text()
    assert "\nl_energy_w: 1.0" in settings  # the recipe's default, which the fixture trained with
    with pytest.raises(SettingError, match=r"holds a run trained with other settings \(l_energy_w 1.0, now 0.0\)"):
        train_lmac.main([HPARAMS, *small_run_flags(tiny_data, tmp_path / "run"), "--l_energy_w", "0"])
    assert (tmp_path / "run" / "hyperparams.yaml").read_text() == settings
    # What only says how to run, or how long, resumes the run: no epoch is trained again.
    train_lmac.main([HPARAMS, *small_run_flags(tiny_data, tmp_path / "run"), "--test_after_training", "False"])
    lines = (tmp_path / "run" / "train_log.txt").read_text().splitlines()
    assert sum(line.startswith("epoch:") for line in lines) == 1


class _Checkpointer:
    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def find_checkpoint(self):
        return self.checkpoint


def test_an_unrecorded_setting_counts_as_changed_unless_added_as_runs_were_and_nothing_is_checked_without_a_checkpoint(
    tmp_path,
):
    (tmp_path / "hyperparams.yaml").write_text("seed: 1\nlr: 1e-3  # Adam\n")
    hparams = {"output_folder": str(tmp_path), "seed": 1, "lr": 0.001, "l_energy_w": 1.0}
    with pytest.raises(SettingError, match=r"other settings \(l_energy_w not recorded, now 1.0\)"):
        check_resumes_the_same_run({**hparams, "checkpointer": _Checkpointer("CKPT")}, ("seed", "lr", "l_energy_w"))
    check_resumes_the_same_run({**hparams, "checkpointer": _Checkpointer(None)}, ("seed", "lr", "l_energy_w"))
    check_resumes_the_same_run({**hparams, "checkpointer": _Checkpointer("CKPT")}, ("seed", "lr"))
    # A setting added later with a default that does what runs did before it: missing means that default.
    keys = ("seed", "energy_scope")
    check_resumes_the_same_run({**hparams, "energy_scope": "clip", "checkpointer": _Checkpointer("CKPT")}, keys)
    with pytest.raises(SettingError, match=r"other settings \(energy_scope clip, now frame\)"):
        check_resumes_the_same_run({**hparams, "energy_scope": "frame", "checkpointer": _Checkpointer("CKPT")}, keys)


def test_the_closing_test_pass_mixes_in_whams_held_out_noise(trained_run, tiny_data, tmp_path, monkeypatch):
    output_folder, _ = trained_run
    shutil.copytree(output_folder, tmp_path / "run")
    made = []

    def recording_stream(hparams, split="tr"):
        made.append((split, real_stream(hparams, split)))
        return made[-1][1]

    real_stream = train_lmac.make_noise_stream
    monkeypatch.setattr(train_lmac, "make_noise_stream", recording_stream)
    brain, _ = train_lmac.main([HPARAMS, *small_run_flags(tiny_data, tmp_path / "run"), "--test_only", "True"])
    streams = dict(made)
    assert set(streams) == {"tr", "tt"}  # training's and validation's noise, and the test pass's
    assert brain.noise_stream is streams["tt"]


def test_fine_tuning_starts_from_a_trained_decoder_and_reports_in_masks(trained_run, tiny_data, tmp_path):
    output_folder, _ = trained_run
    checkpoint = Checkpointer(str(output_folder / "save")).find_checkpoint(min_key=BEST_CHECKPOINT_KEY)
    decoder = os.path.join(checkpoint.path, "psi_model.ckpt")
    flags = [
        *small_run_flags(tiny_data, tmp_path / "finetune"),
        "--finetuning",
        "True",
        "--pretrained_interpreter",
        decoder,
    ]
    log = run_cli([*flags, "--crosscortype", "conv", "--crosscor_th", "-1.0", "--test_after_training", "False"])
    assert f"Loaded the interpreter from {decoder}" in log
    lines = (tmp_path / "finetune" / "train_log.txt").read_text().splitlines()
    assert logged_stats(lines[0])["valid in_masks"] == 1.0  # threshold -1 keeps every example
    # Trained without the test pass that ends a run by default.
    assert not any(line.startswith("Epoch loaded") for line in lines)
    assert not (tmp_path / "finetune" / "test_per_class.json").exists()


@pytest.mark.parametrize(
    "flags, error, message",
    [
        (["--crosscortype", "pearson"], ValueError, r"crosscortype='pearson'; accepted values are conv, dotp\."),
        (["--guidelosstype", "l2"], ValueError, r"guidelosstype='l2'; accepted values are binary, reconstruction\."),
        (["--energy_scope", "band"], ValueError, r"energy_scope='band'; accepted values are clip, frame\."),
        (
            ["--masked_out_loss", "hinge"],
            ValueError,
            r"masked_out_loss='hinge'; accepted values are negative_cross_entropy, not_decision",
        ),
        (
            ["--finetuning", "True"],
            ValueError,
            r"finetuning=True needs a trained decoder: pass --pretrained_interpreter",
        ),
        (
            ["--pretrained_interpreter", "/no/such/psi_model.ckpt"],
            FileNotFoundError,
            r"pretrained_interpreter='/no/such/psi_model.ckpt' does not exist",
        ),
        (
            ["--use_pretrained", "True", "--embedding_model_path", "/no/such/embedding_model.ckpt"],
            FileNotFoundError,
            r"embedding_model_path='/no/such/embedding_model.ckpt' does not exist",
        ),
        (["--test_only", "True"], FileNotFoundError, r"test_only=True, but .* holds no checkpoint"),
        (["--add_wham_noise", "True", "--wham_folder", "null"], ValueError, r"add_wham_noise=True needs --wham_folder"),
    ],
)
def test_misconfigurations_fail_at_start_up(tiny_data, tmp_path, flags, error, message):
    output_folder = tmp_path / "run"
    base = ["--data_folder", tiny_data["esc50_folder"], "--output_folder", str(output_folder), "--n_classes", "2"]
    if "--use_pretrained" not in flags:
        base += ["--use_pretrained", "False"]
    with pytest.raises(error, match=message):
        train_lmac.main([HPARAMS, *base, *flags])
    written = [os.path.join(root, name) for root, _, files in os.walk(output_folder) for name in files]
    assert written == [], "nothing may be written before the settings are checked"


def test_one_optimiser_step_changes_the_decoder_and_not_the_classifier(tiny_data, tmp_path):
    overrides = {
        "data_folder": tiny_data["esc50_folder"],
        "output_folder": str(tmp_path),
        "use_pretrained": False,
        "width": 0.0625,
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, _ = prepare_datasets(hparams)
    brain = lmac_brain.LMAC(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts={"device": "cpu"}
    )
    brain.init_optimizers()
    batch = next(iter(sb.dataio.dataloader.make_dataloader(datasets["train"], batch_size=2)))
    classifier_before = {k: v.clone() for k, v in brain.modules.classifier.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in brain.modules.psi.state_dict().items()}
    brain.modules.train()
    loss = brain.fit_batch(batch)
    assert torch.isfinite(loss)
    classifier_after = brain.modules.classifier.state_dict()
    assert all(torch.equal(classifier_before[k], classifier_after[k]) for k in classifier_before)
    assert not brain.modules.classifier.training
    assert all(parameter.grad is None for parameter in brain.modules.classifier.parameters())
    decoder_after = brain.modules.psi.state_dict()
    assert any(not torch.equal(decoder_before[k], decoder_after[k]) for k in decoder_before)


def test_local_classifier_checkpoints_load_through_the_pretrainer(tmp_path):
    from speechbrain.lobes.models.Cnn14 import Cnn14
    from speechbrain.nnet.linear import Linear

    torch.manual_seed(0)
    trained_embedding = Cnn14(mel_bins=80, emb_dim=2048, return_reps=True)
    trained_head = Linear(input_size=2048, n_neurons=50)
    torch.save(trained_embedding.state_dict(), tmp_path / "embedding_model.ckpt")
    torch.save(trained_head.state_dict(), tmp_path / "classifier.ckpt")
    overrides = {
        "data_folder": None,  # not read: the classifier alone is loaded
        "output_folder": str(tmp_path / "run"),
        "embedding_model_path": str(tmp_path / "embedding_model.ckpt"),
        "classifier_model_path": str(tmp_path / "classifier.ckpt"),
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    assert not torch.equal(hparams["classifier"].w.weight, trained_head.w.weight)
    loading.load_classifier(hparams)
    for loaded, saved in ((hparams["embedding_model"], trained_embedding), (hparams["classifier"], trained_head)):
        saved_state = saved.state_dict()
        assert all(torch.equal(value, saved_state[key]) for key, value in loaded.state_dict().items())


@pytest.mark.parametrize("crosscortype", ["dotp", "conv"])
def test_the_interpretation_steps_of_speechbrains_recipe_equal_the_forward_pass(tiny_data, tmp_path, crosscortype):
    overrides = {
        "data_folder": tiny_data["esc50_folder"],
        "output_folder": str(tmp_path),
        "use_pretrained": False,
        "width": 0.0625,
        "n_classes": 2,
        "crosscortype": crosscortype,
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, _ = prepare_datasets(hparams)
    brain = lmac_brain.LMAC(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"})
    brain.modules.eval()
    batch = next(iter(sb.dataio.dataloader.make_dataloader(datasets["test"], batch_size=2)))
    with torch.no_grad():
        output = brain.compute_forward(batch, sb.Stage.TEST)
    interpretation, mask, phase, log_mag = brain.interpret_computation_steps(batch.sig[0])
    frames, freq = output.mask.shape[1:]
    assert interpretation.shape == mask.shape == (2, freq, frames) and phase.shape == log_mag.shape == (2, frames, freq)
    assert torch.equal(mask, output.mask.transpose(1, 2))
    kept = output.mask * output.features.log_mag[:, :frames]  # M * L: the interpretation, whatever fills the rest
    assert torch.equal(interpretation, kept.transpose(1, 2))
    assert torch.equal(log_mag, output.features.log_mag)
    stft = output.features.stft
    assert torch.allclose(torch.polar(stft.norm(dim=-1), phase), torch.view_as_complex(stft.contiguous()), atol=1e-5)
    clean = output.features.log_mag
    expected = lmac_brain.crosscor(clean, kept, crosscortype)
    assert torch.equal(brain.crosscor(clean, kept), expected)
    assert torch.allclose(brain.crosscor(clean, clean), torch.ones(2), atol=1e-3)  # float32 sums of 220k cells
