"""Classifier families: every block builds a classifier, feature maps and a decoder of the right shapes; an
L-MAC decoder trained on a toy classifier of each family that reads one band puts its mask in that band."""

import copy
import json
import os

import pytest
import soundfile
import torch
import torch.nn.functional as F
from test_train_classifier import load_recipe

import lmac.recipes.eval as lmac_eval
from lmac.checks import SettingError
from lmac.features import LogMagnitudeInput, spectral_features
from lmac.methods import MASK_METHODS
from lmac.models.families import FAMILIES, FAMILY_FOLDER, FeatureMapEncoder, check_l2i_family, load_family, new_decoder
from lmac.models.frozen_classifier import FrozenClassifier
from lmac.models.map_decoder import MapDecoder, onto_grid

# CNN14's published decoder needs 80 mel bands and 513 bins.
SETTINGS = {
    "sample_rate": 16000,
    "n_fft": 1024,
    "hop_length": 16,
    "win_length": 32,
    "n_mels": 80,
    "width": 1 / 16,
    "n_classes": 3,
}
FREQ_BINS = SETTINGS["n_fft"] // 2 + 1
# The map shapes each family's decoder reads: rank 2 [batch, channels, frames', freq'] or rank 1 [batch, channels, frames'].
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAP_RANKS = {"cnn14": [2, 2, 2, 2], "conv2d": [2, 2], "ecapa": [1, 1], "vit": [2, 2]}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("frames", [64, 101])
def test_every_family_classifies_and_its_decoder_covers_the_stft_grid(name, frames):
    torch.manual_seed(0)
    family = load_family(name, SETTINGS)
    classifier = FrozenClassifier(family["embedding_model"], family["classifier"])
    log_mag = torch.rand(2, frames, FREQ_BINS)
    logits, feature_maps = classifier(family["classifier_input"](log_mag))
    assert logits.shape == (2, SETTINGS["n_classes"])
    assert [feature_map.dim() - 2 for feature_map in feature_maps] == MAP_RANKS[name]
    mask_logits = new_decoder(family)(feature_maps, frames)
    assert mask_logits.shape == (2, frames, FREQ_BINS) and torch.isfinite(mask_logits).all()
    # DC and Nyquist, which no mel band covers, are decoded too: not left at logit 0 (a mask of 0.5 for ever)
    assert (mask_logits[..., 0] != 0).all() and (mask_logits[..., -1] != 0).all()
    for layer in (family["gradcam_layer"], *family["randomisation_layers"]):
        classifier.get_submodule(layer)  # every named layer exists


def test_the_recipes_read_one_flag_for_the_family_and_the_stft_stays_shared(tmp_path):
    hparams = load_recipe(
        "lmac_cnn14.yaml", {"output_folder": str(tmp_path), "classifier_family": "ecapa", "width": 0.0625}
    )
    assert type(hparams["embedding_model"].encoder).__name__ == "ECAPA_TDNN"
    assert type(hparams["psi_model"]).__name__ == "MapDecoder"
    assert hparams["gradcam_layer"] == "embedding_model.encoder.mfa"
    assert hparams["modules"]["classifier"].embedding_model is hparams["embedding_model"]
    assert hparams["compute_stft"].n_fft == 1024


def test_an_unknown_family_and_an_incomplete_block_are_named(tmp_path):
    with pytest.raises(SettingError, match=r"classifier_family='resnet' is neither a family of this recipe"):
        load_family("resnet", SETTINGS)
    block = tmp_path / "mine.yaml"
    with open(os.path.join(FAMILY_FOLDER, "conv2d.yaml"), encoding="utf-8") as file:
        block.write_text(file.read().replace("gradcam_layer: embedding_model.encoder.resblock\n", ""))
    with pytest.raises(SettingError, match=r"mine.yaml of classifier_family=.* lacks \['gradcam_layer'\]"):
        load_family(str(block), SETTINGS)
    block.write_text("sample_rate: !PLACEHOLDER\n")
    with pytest.raises(SettingError, match="does not declare the setting"):
        load_family(str(block), SETTINGS)


def test_l2i_is_left_out_of_all_and_refused_by_name_for_another_family():
    conv2d = {
        "family": load_family("conv2d", SETTINGS),
        "classifier_family": "conv2d",
        "compare": "all",
        "int_method": "lmac",
    }
    cnn14 = {**conv2d, "family": load_family("cnn14", SETTINGS), "classifier_family": "cnn14"}
    assert "l2i" not in lmac_eval.methods_of(conv2d) and "gradcam" in lmac_eval.methods_of(conv2d)
    assert "l2i" in lmac_eval.methods_of(cnn14)
    with pytest.raises(
        SettingError, match="L2I reads CNN14's feature maps and classifier_family='conv2d' is not CNN14"
    ):
        MASK_METHODS["l2i"].check_settings({**conv2d, "l2i_folder": "nowhere"})
    check_l2i_family(cnn14)


def test_feature_maps_are_the_named_layers_outputs_and_copies_keep_their_own():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5))
    model = FeatureMapEncoder(encoder, ["0", "2"])
    inputs = torch.rand(3, 1, 4)
    embedding, (first, last) = model(inputs)
    torch.testing.assert_close(first, encoder[0](inputs))
    torch.testing.assert_close(last, embedding)
    assert not encoder[0]._forward_hooks, "the hooks live only while forward runs"
    copied = copy.deepcopy(model)
    with torch.no_grad():
        copied.encoder[0].weight.zero_()
    _, (copied_first, _) = copied(inputs)
    torch.testing.assert_close(copied_first, encoder[0].bias.expand(3, 1, 6))
    torch.testing.assert_close(model(inputs)[1][0], first)


class PairLayer(torch.nn.Module):
    """A layer that returns a tuple, as attention ``(output, weights)`` and LSTM ``(output, state)`` layers do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, inputs):
        output = self.linear(inputs)
        return output, output.sum()


class PairEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = PairLayer()

    def forward(self, inputs):
        output, _ = self.pair(inputs)
        return output


def test_a_layer_that_returns_a_tuple_gives_its_first_element_as_the_map():
    encoder = PairEncoder()
    inputs = torch.rand(2, 3, 4)
    embedding, (feature_map,) = FeatureMapEncoder(encoder, ["pair"])(inputs)
    assert isinstance(feature_map, torch.Tensor)
    torch.testing.assert_close(feature_map, encoder.pair.linear(inputs))


def test_the_vit_reads_every_frame_of_a_clip_whose_length_is_not_whole_patches():
    torch.manual_seed(0)
    family = load_family("vit", SETTINGS)
    classifier = FrozenClassifier(family["embedding_model"], family["classifier"])
    log_mel = torch.rand(1, 431, SETTINGS["n_mels"])  # 26 whole patches of 16 frames and 15 frames more
    changed = log_mel.clone()
    changed[:, 420:] += 3.0  # only the last 11 frames
    with torch.no_grad():
        (logits, maps), (changed_logits, _) = classifier(log_mel), classifier(changed)
    assert not torch.allclose(logits, changed_logits)
    assert maps[0].shape[2] == 27  # ceil(431 / 16) tokens over time


def test_the_vit_s_token_grid_padded_to_whole_patches_lands_on_the_frames_its_patches_cover():
    family = load_family("vit", SETTINGS)
    decoder = new_decoder(family)
    assert decoder.map_cells == [[16, 16], [16, 16]]
    tokens = torch.arange(7.0).view(1, 1, 7, 1).expand(1, 1, 7, 5)  # 7 patches: 112 frames for a 101-frame clip
    on_grid = onto_grid(tokens, (101, 80), cell=(16, 16))
    frames = torch.arange(101.0)
    expected = ((frames + 0.5) / 16 - 0.5).clamp(0, 6)  # frame f lies in patch f // 16, whose middle is 16 k + 7.5
    torch.testing.assert_close(on_grid[0, 0, :, 40], expected)
    stretched = onto_grid(tokens, (101, 80))[0, 0, :, 40]
    assert (stretched - expected).abs().max() > 0.6  # stretching 112 frames of tokens onto 101 drifts by ~10 frames


def test_a_one_dimensional_map_is_spread_over_learned_frequency_rows():
    torch.manual_seed(0)
    decoder = MapDecoder([3], [1], LogMagnitudeInput(), input_bins=17, hidden=2, grid_stride=(1, 1), freq_rows=4)
    projection = decoder.projections[0]
    with torch.no_grad():  # channel c of the projection is row c % 4 of hidden channel c // 4
        projection.weight.zero_()
        projection.bias.zero_()
        projection.bias[1] = 1.0  # hidden channel 0, row 1 of 4
    rows = decoder.on_grid_plane(projection, torch.rand(1, 3, 5), rank=1)
    assert rows.shape == (1, 2, 5, 4)
    expected = torch.zeros(1, 2, 5, 4)
    expected[0, 0, :, 1] = 1.0
    torch.testing.assert_close(rows, expected)
    with pytest.raises(ValueError, match="one rank"):
        MapDecoder([3, 4], [1], LogMagnitudeInput(), input_bins=17)


# --- Known answer: a toy classifier of each family that hears an event in either of two bands ---------------------

BANDS = (slice(64, 112), slice(192, 288))  # linear bins 1-1.75 kHz and 3-4.5 kHz
FRAMES, BATCH = 32, 8
# The families whose masks are also checked in time and against the other band. Over 32 frames CNN14's deepest maps
# are one frame long, and its published decoder keeps part of the event's band through the silent half and of the
# other band (a longer toy clip did not train in the test's steps); CNN14 is checked on the event and on the rest of
# the clip as a whole, where 0.85-0.94 of the rest is under the event's median.
TIMED_AT_32_FRAMES = ("conv2d", "ecapa", "vit")
# The share of the rest of the clip whose mask must be under the event's median (0.5 for a mask blind to the event).
REST_UNDER_EVENT_MEDIAN = {"cnn14": 0.8, "conv2d": 0.9, "ecapa": 0.9, "vit": 0.9}


class BandReader(torch.nn.Module):
    """A toy classifier that reads some bands: class 1 when their input's mean square rise is over ``threshold``.

    Its logits are ``[0, gain * (band energy / threshold - 1)]``, the band energy the mean square of the
    input's positive part (so that it also hears an event in an input with the clip's mean removed, where
    what is quieter than the mean is negative) in ``band`` (a ``[bins]`` 0/1 vector); its feature maps are
    those of the family's embedding model on the whole input, so the decoder has to find the event in them.
    """

    def __init__(self, embedding_model, band, threshold, gain=8.0):
        super().__init__()
        self.embedding_model = embedding_model
        self.register_buffer("band", band)
        self.threshold, self.gain = threshold, gain

    def band_energy(self, classifier_input):
        return (classifier_input * self.band).clamp_min(0).square().sum(dim=2).mean(dim=1) / self.band.sum()

    def forward(self, classifier_input):
        _, feature_maps = self.embedding_model(classifier_input)
        score = self.gain * (self.band_energy(classifier_input) / self.threshold - 1)
        return torch.stack([torch.zeros_like(score), score], dim=1), feature_maps


def input_band(classifier_input, bins):
    """The input bins that carry the linear ``bins``: their energy's largest share.

    Each bin's response to the band, against its response to every bin, from a frame with them less a
    silent frame (a difference that a clip's mean removal leaves alone).
    """
    band = torch.zeros(FREQ_BINS)
    band[bins] = 1.0

    def response(frame):
        out = classifier_input(torch.log1p(torch.stack([frame, torch.zeros(FREQ_BINS)]))[None])[0]
        return out[0] - out[1]

    return (response(band) / response(torch.ones(FREQ_BINS)) > 0.5).float()


def calibrate_batch_norms(model, batches):
    """Sets every batch norm's running statistics to the average over ``batches`` (what eval mode then uses)."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    model.eval()


def toy_batch(generator):
    """``[BATCH, FRAMES, FREQ_BINS]`` log magnitudes: noise everywhere, plus in each clip a loud event in one of
    ``BANDS`` during one half of the frames, both drawn per clip; and each clip's event box ``[BATCH, FRAMES, FREQ_BINS]``."""
    log_mag = 0.3 * torch.rand(BATCH, FRAMES, FREQ_BINS, generator=generator)
    boxes = torch.zeros(BATCH, FRAMES, FREQ_BINS, dtype=torch.bool)
    bands = torch.randint(len(BANDS), (BATCH,), generator=generator).tolist()
    halves = torch.randint(2, (BATCH,), generator=generator).tolist()
    for clip, (band, half) in enumerate(zip(bands, halves)):
        boxes[clip, half * FRAMES // 2 : (half + 1) * FRAMES // 2, BANDS[band]] = True
    return log_mag + 1.5 * boxes, boxes


@pytest.mark.parametrize("name", FAMILIES)
def test_lmac_masks_each_clip_s_event_where_and_when_it_is(name):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    family = load_family(name, {**SETTINGS, "n_classes": 2})
    to_input = family["classifier_input"]
    band = torch.clamp(sum(input_band(to_input, bins) for bins in BANDS), max=1.0)
    calibrate_batch_norms(family["embedding_model"], [to_input(toy_batch(generator)[0]) for _ in range(4)])
    reader = BandReader(family["embedding_model"], band, threshold=1.0)
    reader.threshold = 0.6 * float(reader.band_energy(to_input(toy_batch(generator)[0])).mean())  # 60% of an event
    classifier = FrozenClassifier(reader, torch.nn.Identity())
    decoder = new_decoder(family)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    for _ in range(120):  # L-MAC's objective on clips with an event
        log_mag, _ = toy_batch(generator)
        logits, feature_maps = classifier(to_input(log_mag))
        decision = logits.argmax(dim=1)
        mask = torch.sigmoid(decoder(feature_maps, FRAMES))
        logits_in, _ = classifier(to_input(mask * log_mag, log_mag))
        logits_out, _ = classifier(to_input((1 - mask) * log_mag, log_mag))
        loss = 4 * F.cross_entropy(logits_in, decision) - 0.2 * F.cross_entropy(logits_out, decision) + 4 * mask.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    log_mag, boxes = toy_batch(generator)
    with torch.no_grad():
        logits, feature_maps = classifier(to_input(log_mag))
        assert (logits.argmax(dim=1) == 1).all(), "the toy classifier hears every event"
        mask = torch.sigmoid(decoder(feature_maps, FRAMES))
    for clip in range(BATCH):
        inside, outside = mask[clip][boxes[clip]], mask[clip][~boxes[clip]]
        median = inside.median()
        in_its_band = boxes[clip].any(dim=0)  # the event's bins ...
        at_other_times = mask[clip][:, in_its_band][~boxes[clip][:, in_its_band]]  # ... in the half without it
        other_band = [bins for bins in BANDS if not boxes[clip][:, bins].any()][0]
        assert inside.mean() > 0.5, f"{name}, clip {clip}: the event's mask is {inside.mean():.3f}"
        below = (outside < median).float().mean()  # 0.5 for a mask that does not tell the event from the rest
        assert below > REST_UNDER_EVENT_MEDIAN[name], f"{name}, clip {clip}: too much of the rest is masked in"
        if name in TIMED_AT_32_FRAMES:
            assert (at_other_times < median).float().mean() > 0.9, f"{name}, clip {clip}: its band is kept when silent"
            assert (mask[clip][:, other_band] < median).float().mean() > 0.9, (
                f"{name}, clip {clip}: the other band is kept"
            )


# --- A tiny run of each family: classifier, L-MAC and the comparison ------------------------------------------


@pytest.mark.parametrize("name", [family for family in FAMILIES if family != "cnn14"])  # CNN14's: test_demo.py
def test_a_tiny_run_trains_a_classifier_and_lmac_and_compares_every_method(tiny_data, tmp_path, name):
    import lmac.recipes.export_interpreter as export_interpreter
    import lmac.recipes.train_classifier as train_classifier
    import lmac.recipes.train_lmac as train_lmac
    from lmac.audio.io import peak_normalize
    from lmac.inference import LMACInterpreter

    common = [
        "--data_folder",
        tiny_data["esc50_folder"],
        "--classifier_family",
        name,
        "--width",
        "0.0625",
        "--n_classes",
        "2",
        "--batch_size",
        "2",
        "--num_workers",
        "0",
        "--noise_num_workers",
        "0",
        "--number_of_epochs",
        "1",
    ]
    classifier_folder = tmp_path / "classifier"
    train_classifier.main(
        [os.path.join(REPO, "hparams", "cnn14_classifier.yaml"), *common, "--output_folder", str(classifier_folder)]
    )
    export = classifier_folder / "export"
    interpreter = [
        os.path.join(REPO, "hparams", "lmac_cnn14.yaml"),
        *common,
        "--output_folder",
        str(tmp_path / "lmac"),
        "--embedding_model_path",
        str(export / "embedding_model.ckpt"),
        "--classifier_model_path",
        str(export / "classifier.ckpt"),
        "--interpretations_per_stage",
        "2",
    ]
    brain, _ = train_lmac.main(interpreter)
    assert type(brain.modules.psi).__name__ == "MapDecoder"
    # Every method once (conv2d); the family's own parts elsewhere: its decoder and its Grad-CAM layer.
    compare = "all" if name == "conv2d" else "lmac,gradcam"
    lmac_eval.main([*interpreter, "--compare", compare, "--ig_steps", "2", "--smoothgrad_samples", "2"])
    with open(tmp_path / "lmac" / "eval" / "comparison_clean.json", encoding="utf-8") as file:
        table = json.load(file)["methods"]
    every = [method for method in lmac_eval.METHODS if method != "l2i"]
    expected = (
        every if compare == "all" else ["lmac", "gradcam", "empty_mask", "all_ones_mask"]
    )  # with the reference rows
    assert list(table) == expected
    # eval.py scores the run's decoder as its own TEST did: the same masks, the same saved reference R.
    for key in ("fid_in", "AD", "energy_kept"):
        assert table["lmac"][key] == pytest.approx(brain.last_stage_stats[key], rel=1e-4, abs=1e-6), key
    saved = list((tmp_path / "lmac" / "interpretations" / "test").glob("*/interpretation.wav"))
    assert len(saved) == 2
    export_folder = export_interpreter.main([*interpreter, "--export_folder", str(tmp_path / "export")])
    loaded = LMACInterpreter.from_hparams(source=os.path.abspath(export_folder), savedir=str(tmp_path / "pretrained"))
    assert type(loaded.mods.psi).__name__ == "MapDecoder"
    clip = saved[0].parent / "original.wav"
    result = loaded.interpret_file(str(clip))
    with torch.no_grad():  # the export answers as the run's own modules do
        waveform = peak_normalize(torch.from_numpy(soundfile.read(str(clip), dtype="float32")[0])[None])
        features = spectral_features(waveform, brain.modules.compute_stft, brain.modules.classifier_input)
        logits, _ = brain.modules.classifier(features.classifier_input)
    torch.testing.assert_close(result.probabilities, torch.softmax(logits, dim=1), rtol=1e-4, atol=1e-5)
