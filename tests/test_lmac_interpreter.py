"""LMACInterpreter on a toy classifier with a known answer: the timeline says what it heard when."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from features import DeviceFilterbank, DeviceISTFT, DeviceSTFT
from lmac_interpreter import LMACInterpreter
from mask_methods import MaskMethod

HOP_MS, WIN_MS = 11.6099, 23.2199


class LowOrHigh(torch.nn.Module):
    """Logits ``[low, high]``: the mean log-mel energy of the lower and of the upper half of the bands."""

    def forward(self, mel_input):
        half = mel_input.shape[2] // 2
        logits = torch.stack([mel_input[:, :, :half].mean(dim=(1, 2)), mel_input[:, :, half:].mean(dim=(1, 2))], dim=1)
        return 20 * logits, ()


class WholeSpectrogram(MaskMethod):
    name, title = "ones", "All ones"

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls()

    def mask(self, features, logits, feature_maps):
        return torch.ones_like(features.log_mag)


@pytest.fixture
def toy_interpreter():
    settings = {"sample_rate": 16000, "n_fft": 1024, "hop_length": HOP_MS, "win_length": WIN_MS}
    modules = {
        "compute_stft": DeviceSTFT(**settings),
        "compute_istft": DeviceISTFT(**settings),
        "compute_fbank": DeviceFilterbank(n_mels=80, n_fft=1024, sample_rate=16000, log_mel=False),
        "classifier": LowOrHigh(),
        "psi": torch.nn.Identity(),
    }
    hparams = {"sample_rate": 16000, "signal_length_s": 5, "batch_size": 4, "n_classes": 2}
    return LMACInterpreter(
        modules=modules, hparams=hparams, run_opts={"device": "cpu"}, mask_method=WholeSpectrogram(),
        class_names=["low", "high"],
    )  # fmt: skip


def tone(seconds, frequency, sample_rate=16000):
    return 0.5 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * sample_rate)) / sample_rate).astype("float32")


def test_the_timeline_names_each_events_class_in_its_own_windows(toy_interpreter, tmp_path):
    path = tmp_path / "low_then_high.wav"
    sf.write(path, np.concatenate([tone(10.0, 200.0), tone(10.0, 6000.0)]), 16000)  # 20 s
    result = toy_interpreter.interpret_file(str(path), savedir=str(tmp_path / "out"))
    timeline = result.timeline
    hop_s = 80000 // 2 // 186 * 186 / 16000  # half a clip, a whole number of STFT hops: 2.4994 s
    bounds = [bound for entry in timeline[:3] for bound in (entry["start_s"], entry["end_s"])]
    assert bounds == pytest.approx([0.0, 5.0, hop_s, hop_s + 5.0, 2 * hop_s, 2 * hop_s + 5.0])
    assert timeline[-1]["end_s"] == pytest.approx(20.0)
    for entry in timeline:
        if entry["end_s"] <= 10.0:
            assert entry["class"] == "low", entry
        if entry["start_s"] >= 10.0:
            assert entry["class"] == "high", entry
    assert json.loads((tmp_path / "out" / "low_then_high_timeline.json").read_text()) == timeline
    csv_lines = (tmp_path / "out" / "low_then_high_timeline.csv").read_text().splitlines()
    assert csv_lines[0] == "start_s,end_s,class,probability" and len(csv_lines) == len(timeline) + 1
    assert csv_lines[1].startswith("0.0,5.0,low,")


def test_an_all_ones_mask_gives_the_file_back(toy_interpreter, tmp_path):
    signal = np.concatenate([tone(3.0, 300.0), tone(4.0, 2000.0)])
    sf.write(tmp_path / "clip.wav", signal, 16000, subtype="FLOAT")
    result = toy_interpreter.interpret_file(str(tmp_path / "clip.wav"))
    assert result.interpretation.shape == (1, signal.shape[0]) and result.mask.shape[:2] == (1, signal.shape[0] // 186 + 1)
    expected = torch.from_numpy(signal / np.abs(signal).max())
    assert torch.allclose(result.interpretation[0, 400:-400], expected[400:-400], atol=1e-3)
