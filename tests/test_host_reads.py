"""A step reads one value back on the host: its loss. On a GPU each such read waits for all queued work."""

import os

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from torch.overrides import TorchFunctionMode

import lmac.metrics as interpretation_metrics
import lmac.training.lmac as lmac_brain
from lmac.data.esc50 import prepare_datasets
from lmac.data.wham import make_noise_stream
from lmac.metrics import load_event_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "hparams", "lmac_cnn14.yaml")
HOST_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}


class HostReads(TorchFunctionMode):
    """Records the tensor calls that hand values to Python or to host memory, except on ``ignored`` tensors."""

    def __init__(self, ignored=()):
        super().__init__()
        self.ignored = {id(tensor) for tensor in ignored}
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS and not (args and id(args[0]) in self.ignored):
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def counting_host_reads(function, ignored=()):
    """``function`` wrapped to append the host reads of each call to the returned list."""
    calls = []

    def counted(*args, **kwargs):
        with HostReads(ignored) as mode:
            result = function(*args, **kwargs)
        calls.append(mode.reads)
        return result

    return counted, calls


@pytest.fixture(params=[False, True], ids=["base", "finetuning"])
def noisy_lmac(request, synthetic_data, tmp_path):
    """An L-MAC brain (width 1/32) with WHAM! noise, events for localisation, its optimiser and a batch."""
    overrides = {
        "data_folder": synthetic_data["esc50_folder"],
        "output_folder": str(tmp_path),
        "use_pretrained": False,
        "width": 0.03125,
        "n_classes": 3,
        "interpretations_per_stage": 0,
        "finetuning": request.param,
        "add_wham_noise": True,
        "wham_folder": synthetic_data["wham_folder"],
        "noise_num_workers": 0,
        "batch_size": 2,
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, _ = prepare_datasets(hparams)
    brain = lmac_brain.LMAC(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu"},
        noise_stream=make_noise_stream(hparams),
    )
    brain.init_optimizers()
    brain.events = load_event_table(synthetic_data["esc50_folder"])
    batch = next(iter(sb.dataio.dataloader.make_dataloader(datasets["train"], batch_size=2)))
    return brain, batch


def test_a_training_step_reads_only_its_loss_on_the_host(noisy_lmac, monkeypatch):
    brain, batch = noisy_lmac
    brain.modules.train()
    brain.fit_batch(batch)  # creates the optimiser's state
    # Adam's step counters live on the host on a GPU as well (or on the device, fused): not a device read.
    step_counters = [state["step"] for state in brain.optimizer.state.values()]
    counted, calls = counting_host_reads(sb.Brain.fit_batch, ignored=step_counters)
    monkeypatch.setattr(sb.Brain, "fit_batch", counted)
    for _ in range(2):
        brain.fit_batch(batch)
    assert calls == [["cpu"], ["cpu"]], "SpeechBrain's loss.detach().cpu() and nothing else"


def test_an_evaluation_step_keeps_its_scores_on_the_device(noisy_lmac, monkeypatch):
    brain, batch = noisy_lmac
    # As on a GPU: the rows of the Gini index are sorted on the device (on the CPU NumPy sorts them).
    monkeypatch.setattr(interpretation_metrics, "_sorted_rows", lambda values: torch.sort(values, dim=1).values)
    brain.modules.eval()
    brain.on_stage_start(sb.Stage.TEST)
    brain.evaluate_batch(batch, sb.Stage.TEST)  # starts the noise loader (its seed is drawn on the host, once)
    counted, calls = counting_host_reads(sb.Brain.evaluate_batch)
    monkeypatch.setattr(sb.Brain, "evaluate_batch", counted)
    brain.on_stage_start(sb.Stage.TEST)
    losses = [brain.evaluate_batch(batch, sb.Stage.TEST) for _ in range(2)]
    assert calls == [["cpu"], ["cpu"]]
    assert "localization" in brain.stage_scores and all(
        isinstance(value, torch.Tensor) for values in brain.stage_scores.values() for value in values
    )
    with HostReads() as mode:
        stats = brain.stage_statistics(sum(losses) / 2)
    assert mode.reads.count("tolist") == 1, "every mean reaches the host in one copy"
    assert stats["AD"] == pytest.approx(torch.cat(brain.stage_scores["AD"]).mean().item())


def test_smoothgrad_reads_nothing_on_the_host_and_matches_captum_with_a_float_noise_level():
    from captum.attr import NoiseTunnel, Saliency
    from speechbrain.processing.features import Filterbank

    from lmac.methods import SmoothGradMask

    torch.manual_seed(0)
    weights = torch.randn(12, 3)

    def classifier(mel_input):  # nonlinear, so the noise changes the gradients
        return torch.tanh(mel_input).square().mean(dim=1) @ weights, ()

    mel_input = torch.rand(2, 6, 12) * 3
    method = SmoothGradMask(classifier, Filterbank(n_mels=12, n_fft=64, log_mel=False), samples=4, noise=0.15)
    decision = torch.tensor([0, 2])
    torch.manual_seed(1)
    with HostReads() as mode:
        attribution = method.input_attribution(mel_input.clone().requires_grad_(True), decision, None)
    assert mode.reads == []
    spread = float(mel_input.max() - mel_input.min())
    torch.manual_seed(1)
    expected = NoiseTunnel(Saliency(lambda x: classifier(x)[0])).attribute(
        mel_input.clone().requires_grad_(True),
        nt_type="smoothgrad",
        nt_samples=4,
        nt_samples_batch_size=2,
        stdevs=0.15 * spread,
        target=decision,
        abs=True,
    )
    torch.testing.assert_close(attribution, expected, rtol=1e-4, atol=1e-6)


def test_the_validation_clips_are_the_same_inputs_at_every_epoch_and_their_classifier_scores_are_kept(
    noisy_lmac, monkeypatch
):
    brain, batch = noisy_lmac
    brain.modules.eval()
    inputs, sensitivities = [], []
    add_noise, sensitivity = brain.add_noise, brain.classifier_sensitivity
    monkeypatch.setattr(brain, "classifier_sensitivity", lambda output: sensitivities.append(1) or sensitivity(output))
    monkeypatch.setattr(brain, "add_noise", lambda *args: remember(inputs, add_noise(*args)))
    stages = (sb.Stage.VALID, sb.Stage.VALID, sb.Stage.TEST, sb.Stage.TEST)
    for stage in stages:
        brain.on_stage_start(stage)
        brain.evaluate_batch(batch, stage)
    valid, test = inputs[:2], inputs[2:]
    assert torch.equal(*valid) and not torch.allclose(*test)  # the test passes draw their noise anew
    # The classifier's sensitivity at the validation clips is computed at the first epoch only.
    assert len(sensitivities) == 3


def remember(kept, mixed):
    """Appends the mixture's input ``wavs`` to ``kept``; returns ``mixed``."""
    kept.append(mixed.wavs)
    return mixed
