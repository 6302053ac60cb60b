"""eval.py: every contamination of the test fold, interpretation of any sound file, the report."""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import speechbrain as sb
import torch
import torchaudio
from conftest import tiny_run_flags
from hyperpyyaml import load_hyperpyyaml

import lmac.data.contamination as contamination
import lmac.recipes.demo as demo
import lmac.recipes.eval as lmac_eval
import lmac.recipes.export_interpreter as export_interpreter
import lmac.recipes.sweep as sweep
import lmac.recipes.train_lmac as train_lmac
import lmac.scoring as scoring
from lmac.data.esc50 import prepare_datasets
from lmac.data.synthetic import synthesize_noise
from lmac.inference import LMACInterpreter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "hparams", "lmac_cnn14.yaml")
METRICS = ("loss", "fid_in", "FF", "AI", "AD", "AG", "SPS", "COMP", "acc")


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny L-MAC run (width 1/32, one epoch) and the flags that evaluate it."""
    root = tmp_path_factory.mktemp("eval")
    data = tiny_data
    flags = tiny_run_flags(data["esc50_folder"], root / "run")
    train_lmac.main([HPARAMS, *flags, "--number_of_epochs", "1"])
    speech = root / "LJSpeech" / "wavs"
    speech.mkdir(parents=True)
    for index in range(2):
        babble = synthesize_noise("babble", np.random.default_rng(index), 16000 * 3) * 0.1
        sf.write(speech / f"LJ001-000{index}.wav", babble.astype("float32"), 22050)
    return {"data": data, "flags": flags, "root": root, "speech": str(speech)}


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


@pytest.mark.parametrize(
    "condition, extra",
    [
        ("clean", []),
        ("wham", ["--add_wham_noise", "True"]),
        ("mixtures", ["--overlap_type", "mixtures"]),
        ("class_mixtures", ["--overlap_type", "class_mixtures"]),
        ("white_noise", ["--overlap_type", "white_noise"]),
        ("speech", ["--overlap_type", "speech"]),
    ],
)
def test_every_condition_reports_every_metric(trained, condition, extra):
    if condition == "wham":
        extra = [*extra, "--wham_folder", trained["data"]["wham_folder"]]
    if condition == "speech":
        extra = [*extra, "--speech_folder", trained["speech"]]
    assert lmac_eval.main([HPARAMS, *trained["flags"], *extra]) == []
    folder = trained["root"] / "run" / "eval" / condition
    metrics = read_json(folder / f"metrics_{condition}.json")
    assert metrics["condition"] == condition
    for name in METRICS:
        assert math.isfinite(metrics[name]), name
    # How much the mask listens to the clean clip rather than to what was mixed in: only with something mixed in.
    assert ("clean_energy_share" in metrics) == (condition != "clean")
    assert metrics.get("clean_energy_share", 0.0) >= 0
    table = (folder / f"metrics_{condition}.md").read_text()
    assert all(f"| {name} |" in table for name in METRICS)
    assert len(list((folder / "test").glob("*/interpretation.wav"))) == 2
    assert (folder / "report.html").is_file()
    # The synthetic clips keep their events, so every condition has a target to listen for; with two classes
    # every decision is one of the mixture's two.
    assert math.isfinite(metrics["ideal_mask_sir_gain_db"]) and metrics["ideal_mask_sir_gain_db"] > 0
    assert len(list((folder / "test").glob("*/target.wav"))) == 2
    assert "SIR gain" in (folder / "report.html").read_text()
    per_class = read_json(folder / f"metrics_{condition}_per_class.json")
    # A class is scored on the clips decided as the class of their target's sound; the share of them says how many.
    for stats in per_class.values():
        assert ("ideal_mask_sir_gain_db" in stats) == (stats["scored_share"] > 0)
    # The stage's share of clips at >= 6 dB is the classes' shares weighted by their scored clips.
    meta = pd.read_csv(os.path.join(trained["data"]["esc50_folder"], "meta", "esc50.csv"))
    counts = meta[meta["fold"] == 5]["category"].value_counts()
    scored = {name: stats["scored_share"] * counts[name] for name, stats in per_class.items()}
    if sum(scored.values()) > 0:
        weighted = sum(per_class[name]["sir_gain_6db_share"] * k for name, k in scored.items() if k > 0)
        assert metrics["sir_gain_6db_share"] == pytest.approx(weighted / sum(scored.values()), abs=1e-6)


def test_the_clean_target_is_the_clips_event_as_the_classifier_hears_it(trained):
    lmac_eval.main([HPARAMS, *trained["flags"]])
    esc50 = trained["data"]["esc50_folder"]
    for clip in (trained["root"] / "run" / "eval" / "clean" / "test").iterdir():
        target, _ = sf.read(clip / "target.wav", dtype="float32")
        event, rate = sf.read(os.path.join(esc50, "meta", "stems", f"{clip.name}_event.wav"), dtype="float32")
        whole, _ = sf.read(os.path.join(esc50, "audio", f"{clip.name}.wav"), dtype="float32")
        event, whole = (
            torchaudio.functional.resample(torch.from_numpy(signal), rate, 16000) for signal in (event, whole)
        )
        expected = event / whole.abs().max()  # scaled as the clip the classifier hears, peak-normalised
        np.testing.assert_allclose(target, expected.numpy()[: target.shape[0]], atol=2e-4)
        assert np.abs(target).max() > 0.05  # an event, not silence


def test_the_test_fold_report_names_true_and_predicted_classes_and_explains_the_metrics(trained):
    lmac_eval.main([HPARAMS, *trained["flags"]])
    report = (trained["root"] / "run" / "eval" / "clean" / "report.html").read_text()
    with open(os.path.join(trained["data"]["esc50_folder"], "meta", "esc50.csv"), encoding="utf-8") as file:
        categories = dict(line.split(",")[0:4:3] for line in file.read().splitlines()[1:])  # filename -> category
    clips = sorted(path.name for path in (trained["root"] / "run" / "eval" / "clean" / "test").iterdir())
    assert len(clips) == 2
    for clip in clips:
        row = re.search(rf"<tr><td>{re.escape(clip)}</td><td>([^<]*)</td><td>([^<]*)</td>", report)
        assert row is not None, clip
        assert row.group(1) == categories[f"{clip}.wav"]
        assert re.fullmatch(r"\S+ \((0|1)\.\d\d\)", row.group(2)), row.group(2)
    assert "<td>AD</td>" in report and "average drop" in report and "<td>lower</td>" in report


def test_an_evaluation_leaves_the_runs_configuration_and_log_alone(trained, tmp_path):
    run = trained["root"] / "run"
    before = {name: (run / name).read_bytes() for name in ("hyperparams.yaml", "train_log.txt")}
    eval_folder = tmp_path / "another_eval"
    lmac_eval.main([HPARAMS, *trained["flags"], "--randomisation_clips", "3", "--eval_folder", str(eval_folder)])
    assert {name: (run / name).read_bytes() for name in before} == before
    assert "randomisation_clips: 3" in (eval_folder / "hyperparams.yaml").read_text()
    assert "test fid_in" in (eval_folder / "eval_log.txt").read_text()


def test_out_of_domain_evaluation_is_reproducible(trained):
    folder = trained["root"] / "run" / "eval" / "mixtures"
    flags = [HPARAMS, *trained["flags"], "--overlap_type", "mixtures"]
    lmac_eval.main(flags)
    first = read_json(folder / "metrics_mixtures.json")
    lmac_eval.main(flags)
    second = read_json(folder / "metrics_mixtures.json")
    assert first.pop("seconds_per_clip") > 0 and second.pop("seconds_per_clip") > 0  # timing, not a result
    assert second == first


def mixing_weights(mixture, clean, other):
    unit = [signal.double() / signal.double().norm(dim=1, keepdim=True) for signal in (clean, other)]
    basis = torch.stack(unit, dim=2)
    weights = torch.linalg.lstsq(basis, mixture.double().unsqueeze(2)).solution.squeeze(2)  # [batch, 2]
    return (weights[:, 0] / weights[:, 1]).float()


def test_a_new_measure_is_one_registry_entry_and_reaches_the_comparison_the_report_the_summary_and_the_sweep(
    trained, tmp_path, monkeypatch
):
    loudest = scoring.Measure(
        "the loudest cell of the mask", "higher", shown_in=scoring.VIEWS, score=lambda clip: clip.mask.amax(dim=(1, 2))
    )
    monkeypatch.setitem(scoring.MEASURES, "loudest_cell", loudest)
    batches = []  # a classifier-only measure is computed once per clip, for every method of the comparison

    def decided(clip):
        batches.append(clip.ids)
        return clip.decisions.float()

    shared = scoring.Measure("the decision", shown_in=(), score=decided, classifier_only=True)
    monkeypatch.setitem(scoring.MEASURES, "decided", shared)
    lmac_eval.main([HPARAMS, *trained["flags"], "--eval_folder", str(tmp_path), "--compare", "lmac"])
    assert len(batches) == 1 and len(batches[0]) == 2  # one batch of the 2 test clips, three methods
    table = read_json(tmp_path / "comparison_clean.json")["methods"]
    assert table["all_ones_mask"]["loudest_cell"] == 1.0 and table["empty_mask"]["loudest_cell"] == 0.0
    assert 0 < table["lmac"]["loudest_cell"] <= 1  # a sigmoid's
    header = next(line for line in (tmp_path / "comparison_clean.md").read_text().splitlines() if line.startswith("|"))
    assert "| loudest_cell |" in header
    assert "the loudest cell of the mask" in (tmp_path / "clean" / "report.html").read_text()
    per_class = read_json(tmp_path / "clean" / "metrics_clean_per_class.json")
    assert per_class and all("loudest_cell" in stats for stats in per_class.values())
    lmac_stats = read_json(tmp_path / "clean" / "metrics_clean.json")
    assert demo.summary_measures(lmac_stats)["loudest_cell"] == table["lmac"]["loudest_cell"]
    seed = sweep.seed_results(str(tmp_path))
    assert seed["listening"]["clean"]["all_ones_mask"]["loudest_cell"] == 1.0
    assert "loudest_cell" in "\n".join(sweep.listening_markdown({"1": seed}))


def test_overlaps_mix_with_the_weights_of_the_spec(tmp_path):
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 4000, generator=generator)
    recording = tmp_path / "other.wav"
    sf.write(recording, np.random.default_rng(1).normal(size=8000).astype("float32") * 0.1, 16000)
    overlap = contamination.ClipOverlap([str(recording)], 16000, seed=0)
    mixture = overlap.mix(clean).wavs
    assert torch.allclose(mixture.abs().amax(dim=1), torch.ones(3))
    again = contamination.ClipOverlap([str(recording)], 16000, seed=0)
    rng_clips = torch.stack([again.other_clip(again.draw(None), 4000)[0] for _ in range(3)])
    assert torch.allclose(mixing_weights(mixture, clean, rng_clips), torch.full((3,), 4.0), rtol=1e-3)
    white = contamination.WhiteNoiseOverlap(seed=3).mix(clean).wavs
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(mixing_weights(white, clean, noise), torch.full((3,), 2.0), rtol=1e-3)


def test_a_contamination_reaches_the_evaluated_inputs_and_changes_the_metrics(trained, tmp_path):
    flags = [HPARAMS, *trained["flags"], "--eval_folder", str(tmp_path)]
    lmac_eval.main(flags)
    lmac_eval.main([*flags, "--overlap_type", "white_noise"])
    clean_folder, noisy_folder = tmp_path / "clean", tmp_path / "white_noise"
    clips = sorted(path.name for path in (clean_folder / "test").iterdir())
    assert clips == sorted(path.name for path in (noisy_folder / "test").iterdir()) and len(clips) == 2
    # The one test batch (2 clips) got white noise from a generator seeded with the run's seed (1234).
    noise = torch.randn(2, 80000, generator=torch.Generator().manual_seed(1234))
    for clip in clips:
        clean = torch.from_numpy(sf.read(clean_folder / "test" / clip / "original.wav", dtype="float32")[0])[None]
        evaluated = torch.from_numpy(sf.read(noisy_folder / "test" / clip / "original.wav", dtype="float32")[0])[None]
        assert not torch.allclose(evaluated, clean, atol=1e-2)
        ratios = [mixing_weights(evaluated, clean, row[None]) for row in noise]  # the clip's row fits, 1 : 0.5
        assert min(abs(ratio.item() - 2.0) for ratio in ratios) < 0.02
    clean_metrics = read_json(clean_folder / "metrics_clean.json")
    noisy_metrics = read_json(noisy_folder / "metrics_white_noise.json")
    assert any(clean_metrics[name] != noisy_metrics[name] for name in ("FF", "AD", "SPS", "COMP"))


@pytest.mark.parametrize(
    "extra, error, message",
    [
        (
            ["--overlap_type", "babble"],
            ValueError,
            r"overlap_type='babble'; accepted values are \('mixtures', 'class_mixtures', 'white_noise', 'speech'\)",
        ),
        (["--overlap_type", "speech"], FileNotFoundError, r"overlap_type=speech needs --speech_folder"),
        (["--overlap_type", "mixtures", "--add_wham_noise", "True"], ValueError, r"Choose one contamination"),
        (["--single_sample", "/no/such.wav"], FileNotFoundError, r"single_sample='/no/such.wav' does not exist"),
        (
            ["--pretrained_interpreter", "/no/psi_model.ckpt"],
            FileNotFoundError,
            r"pretrained_interpreter='/no/psi_model.ckpt' does not exist",
        ),
    ],
)
def test_misconfigured_evaluations_fail_at_start_up(trained, extra, error, message):
    with pytest.raises(error, match=message):
        lmac_eval.main([HPARAMS, *trained["flags"], *extra])


def test_an_untrained_run_has_nothing_to_evaluate(trained, tmp_path):
    flags = [HPARAMS, *trained["flags"]]
    flags[flags.index("--output_folder") + 1] = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"No interpreter to evaluate: .* holds no checkpoint"):
        lmac_eval.main(flags)


def tone(seconds, sample_rate, frequency=440.0, channels=1):
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    signal = 0.4 * np.sin(2 * np.pi * frequency * t).astype("float32")
    return np.stack([signal] * channels, axis=1) if channels > 1 else signal


def folder_digest(folder):
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode() + (folder / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def interpreted(trained):
    """A folder of varied files (and one corrupt), interpreted once."""
    folder = trained["root"] / "my_sounds"
    folder.mkdir()
    sf.write(folder / "tone.flac", tone(2.0, 22050), 22050)
    sf.write(folder / "tone.ogg", tone(1.5, 44100, 700.0), 44100)
    sf.write(folder / "stereo48k.wav", tone(3.0, 48000, channels=2), 48000)
    sf.write(folder / "short.wav", tone(0.3, 16000), 16000)
    sf.write(folder / "long.wav", tone(40.0, 8000, 300.0), 8000)
    sf.write(folder / "vorbis.oga", tone(1.0, 22050, 500.0), 22050, format="OGG", subtype="VORBIS")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00 not really audio")
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "no_samples.wav", np.zeros(0, dtype="float32"), 16000)  # a valid WAV header, no samples
    (folder / "README.txt").write_text("not audio")
    before = folder_digest(folder)
    failed = lmac_eval.main([HPARAMS, *trained["flags"], "--interpret_folder", str(folder)])
    return {"folder": folder, "before": before, "failed": failed, "out": trained["root"] / "run" / "eval" / "files"}


# The output name and duration of each file of ``interpreted`` that can be interpreted (tone.flac and
# tone.ogg share a stem, so both are named by their file names).
INTERPRETABLE = [
    ("tone_flac", 2.0),
    ("tone_ogg", 1.5),
    ("stereo48k", 3.0),
    ("short", 0.3),
    ("long", 40.0),
    ("vorbis", 1.0),
]


@pytest.mark.parametrize("name, seconds", INTERPRETABLE)
def test_each_file_gets_an_interpretation_of_its_own_duration(interpreted, name, seconds):
    interpretation, rate = sf.read(interpreted["out"] / f"{name}_interpretation.wav")
    assert rate == 16000 and interpretation.ndim == 1
    assert interpretation.shape[0] == int(round(seconds * 16000))
    assert np.isfinite(interpretation).all()
    record = read_json(interpreted["out"] / f"{name}.json")
    assert record["duration_s"] == pytest.approx(seconds, abs=1e-3)
    probabilities = [entry["probability"] for entry in record["top5"]]
    assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)  # two classes: top-5 holds them all
    assert (interpreted["out"] / f"{name}_spectrogram.png").stat().st_size > 5_000


def test_bad_files_are_reported_and_the_rest_interpreted(interpreted):
    assert sorted(os.path.basename(path) for path in interpreted["failed"]) == [
        "corrupt.wav",
        "empty.wav",
        "no_samples.wav",
    ]
    assert folder_digest(interpreted["folder"]) == interpreted["before"], "the input folder must not change"


def test_long_files_are_stitched_without_clicks(interpreted):
    interpretation, _ = sf.read(interpreted["out"] / "long_interpretation.wav")  # 40 s: 16 windows of 5 s
    envelope = np.sqrt((interpretation[: 640000 // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))  # 10 ms RMS
    inner = envelope[5:-5]  # away from the file's own start and end
    assert np.abs(np.diff(inner)).max() < 0.1 * inner.mean(), "a seam or click between windows"
    assert inner.min() > 0.5 * inner.mean(), "no window may drop out"


def test_command_line_exit_status_says_some_files_failed(trained, interpreted, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "eval.py"),
            HPARAMS,
            *trained["flags"],
            "--interpret_folder",
            str(interpreted["folder"]),
            "--eval_folder",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Could not interpret" in result.stderr + result.stdout and "corrupt.wav" in result.stderr + result.stdout
    assert (tmp_path / "out" / "files" / "tone_flac_interpretation.wav").is_file()


def report_links(report):
    return re.findall(r'(?:src)="([^"]+)"', report.read_text())


def test_the_report_is_self_contained_and_travels(interpreted, tmp_path):
    report = interpreted["out"] / "report.html"
    text = report.read_text()
    assert text.count("<audio") == 2 * len(INTERPRETABLE) and text.count("<img") == len(INTERPRETABLE)
    assert "http" not in text
    moved = tmp_path / "copied_elsewhere"
    shutil.copytree(interpreted["out"], moved)
    for link in report_links(moved / "report.html"):
        assert not os.path.isabs(link) and (moved / link).is_file(), link


CHECK_SCRIPT = """
<script>
window.addEventListener('load', () => {
  const audios = [...document.querySelectorAll('audio')];
  const images = [...document.querySelectorAll('img')];
  const check = () => {
    const ready = audios.filter(a => a.readyState >= 1 && a.duration > 0).length;
    const shown = images.filter(i => i.complete && i.naturalWidth > 0).length;
    const errors = audios.filter(a => a.error).length;
    const fits = images.every(i => i.getBoundingClientRect().right <= document.documentElement.clientWidth);
    document.body.setAttribute('data-check', `audio ${ready}/${audios.length} errors ${errors} images ${shown}/${images.length} fit ${fits}`);
    if (ready + errors < audios.length) setTimeout(check, 100);
  };
  audios.forEach(a => a.load());
  check();
});
</script>
"""


def test_the_report_loads_in_a_headless_browser(interpreted, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser check: `make test` installs Debian's chromium as root.")
        pytest.skip("chromium is not installed (make test installs it when run as root on Debian)")
    moved = tmp_path / "report"
    shutil.copytree(interpreted["out"], moved)
    page = moved / "check.html"
    page.write_text((moved / "report.html").read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--allow-file-access-from-files",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1400,2000",
    ]
    files = len(INTERPRETABLE)
    for _ in range(3):  # the virtual time budget can run out before a busy machine has read the sounds
        dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        status = re.search(r'data-check="([^"]+)"', dom)
        assert status is not None, dom[-2000:]
        still_loading = re.match(r"audio (\d+)/(\d+) errors 0 ", status.group(1))
        if not still_loading or still_loading.group(1) == still_loading.group(2):
            break
    assert status.group(1) == f"audio {2 * files}/{2 * files} errors 0 images {files}/{files} fit true"
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={screenshot}", (moved / "report.html").as_uri()], capture_output=True, timeout=120
    )
    assert screenshot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The tiny run exported, and loaded back with LMACInterpreter.from_hparams from the folder."""
    folder = export_interpreter.main([HPARAMS, *trained["flags"], "--export_folder", str(trained["root"] / "export")])
    elsewhere, working_directory = tmp_path_factory.mktemp("elsewhere"), os.getcwd()
    os.chdir(elsewhere)  # loaded from another working directory, as on another machine
    try:
        interpreter = LMACInterpreter.from_hparams(source=os.path.abspath(folder), savedir="pretrained")
    finally:
        os.chdir(working_directory)
    return {"folder": folder, "interpreter": interpreter}


def test_one_savedir_for_two_exports_answers_with_each_ones_own_model(exported, tmp_path):
    first = exported["folder"]
    second = tmp_path / "renamed_export"
    shutil.copytree(first, second)
    labels, separator, extras = (second / "label_encoder.ckpt").read_text().partition("================")
    (second / "label_encoder.ckpt").write_text(
        re.sub(r"^'([^']*)'", r"'other_\1'", labels, flags=re.M) + separator + extras
    )
    savedir = tmp_path / "pretrained"
    for source in (first, second, first):
        interpreter = LMACInterpreter.from_hparams(source=str(source), savedir=str(savedir))
        other = str(source) == str(second)
        assert all(name.startswith("other_") == other for name in interpreter.class_names), source
    (savedir / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"savedir=.*pretrained.* holds 'notes.txt', which was not fetched"):
        LMACInterpreter.from_hparams(source=str(second), savedir=str(savedir))
    assert (savedir / "notes.txt").read_text() == "mine"


def test_an_export_from_before_classifier_families_is_named_with_the_fix(exported, tmp_path):
    old = tmp_path / "old_export"
    shutil.copytree(exported["folder"], old)
    text = (old / "hyperparams.yaml").read_text()
    assert "\n  classifier_input: *" in text  # the modules' entry
    (old / "hyperparams.yaml").write_text(text.replace("\n  classifier_input: *", "\n  compute_fbank: *", 1))
    with pytest.raises(
        ValueError, match=r"lack \['classifier_input'\].*export the run again with export_interpreter.py"
    ):
        LMACInterpreter.from_hparams(source=str(old), savedir=str(tmp_path / "pretrained"))


def test_the_export_is_a_model_card_folder(exported):
    names = sorted(os.listdir(exported["folder"]))
    assert names == ["classifier.ckpt", "embedding_model.ckpt", "hyperparams.yaml", "label_encoder.ckpt", "psi.ckpt"]
    with open(os.path.join(exported["folder"], "hyperparams.yaml"), encoding="utf-8") as file:
        text = file.read()
    assert "width: 0.03125" in text and "n_classes: 2" in text


def test_the_exported_interpreter_gives_the_runs_masks_and_probabilities(trained, exported):
    overrides = "\n".join(
        f"{key.lstrip('-')}: {value}" for key, value in zip(trained["flags"][::2], trained["flags"][1::2])
    )
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, label_encoder = prepare_datasets(hparams)
    lmac_eval.load_classifier(hparams)
    brain = lmac_eval.make_brain(hparams, {"device": "cpu"}, lmac_eval.build_method(hparams, "lmac"))
    brain.modules.eval()
    batch = next(iter(sb.dataio.dataloader.make_dataloader(datasets["test"], batch_size=2)))
    with torch.no_grad():
        output = brain.compute_forward(batch, sb.Stage.TEST)
    result = exported["interpreter"].interpret_batch(batch.sig[0])
    assert result.interpretation.shape == batch.sig[0].shape and result.mask.shape == output.mask.shape
    assert torch.allclose(result.mask, output.mask, atol=1e-6)
    assert torch.allclose(result.probabilities, torch.softmax(output.logits, dim=1), atol=1e-6)
    assert result.labels == [label_encoder.ind2lab[index] for index in output.logits.argmax(dim=1).tolist()]
    halves = exported["interpreter"].interpret_batch(batch.sig[0], wav_lens=torch.tensor([1.0, 0.5]))
    assert halves.interpretation[1, 40000:].abs().max() == 0 and halves.interpretation[1, :40000].abs().max() > 0
    assert halves.mask[1, 40000 // 186 + 1 :].max() == 0 and torch.equal(halves.mask[0], result.mask[0])


def test_an_exported_interpreter_interprets_a_file_as_eval_does(interpreted, exported, tmp_path):
    result = exported["interpreter"].interpret_file(str(interpreted["folder"] / "tone.flac"), savedir=str(tmp_path))
    assert result.interpretation.shape == (1, 32000) and result.probabilities.shape == (1, 2)
    written, _ = sf.read(tmp_path / "tone_interpretation.wav")
    by_eval, _ = sf.read(interpreted["out"] / "tone_flac_interpretation.wav")  # eval named it apart from tone.ogg
    assert np.allclose(written, by_eval, atol=1e-4)
    record, eval_record = read_json(tmp_path / "tone.json"), read_json(interpreted["out"] / "tone_flac.json")
    assert [entry["class"] for entry in record["top5"]] == [entry["class"] for entry in eval_record["top5"]]
    assert result.labels == [record["top5"][0]["class"]]
    for name, message in (
        ("corrupt.wav", r"Cannot read .*corrupt\.wav"),
        ("no_samples.wav", r"no_samples\.wav holds no audio samples"),
    ):
        with pytest.raises(ValueError, match=message):
            exported["interpreter"].interpret_file(str(interpreted["folder"] / name))


def test_a_batch_gives_what_each_file_gives_alone(exported, tmp_path):
    clips = [tone(5.0, 16000, 300.0), tone(5.0, 16000, 1200.0) * np.linspace(0, 1, 80000, dtype="float32")]
    for index, clip in enumerate(clips):
        sf.write(tmp_path / f"clip{index}.wav", clip, 16000, subtype="FLOAT")
    batch = exported["interpreter"].interpret_batch(torch.from_numpy(np.stack(clips)))
    for index in range(2):
        alone = exported["interpreter"].interpret_file(str(tmp_path / f"clip{index}.wav"))
        assert torch.allclose(batch.mask[index], alone.mask[0], atol=1e-5)
        assert torch.allclose(batch.probabilities[index], alone.probabilities[0], atol=1e-5)
        assert torch.allclose(batch.interpretation[index], alone.interpretation[0], atol=1e-4)
        assert batch.labels[index] == alone.labels[0]


def test_an_exported_interpreter_gives_the_mask_of_the_runs_own(trained, interpreted, exported):
    overrides = "\n".join(
        f"{key.lstrip('-')}: {value}" for key, value in zip(trained["flags"][::2], trained["flags"][1::2])
    )
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    lmac_eval.load_classifier(hparams)
    runs_own = lmac_eval.make_file_interpreter(hparams, {"device": "cpu"}, lmac_eval.build_method(hparams, "lmac"))
    path = str(interpreted["folder"] / "stereo48k.wav")
    assert torch.allclose(
        exported["interpreter"].interpret_file(path).mask, runs_own.interpret_file(path).mask, atol=1e-5
    )


def test_a_truncated_file_raises_an_error_that_names_it(exported, tmp_path):
    sf.write(tmp_path / "whole.flac", tone(2.0, 16000), 16000)
    content = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"Cannot read .*cut\.flac"):
        exported["interpreter"].interpret_file(str(tmp_path / "cut.flac"))
    sf.write(tmp_path / "whole.wav", tone(2.0, 16000), 16000)
    content = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"cut\.wav is truncated: its data chunk holds"):
        exported["interpreter"].interpret_file(str(tmp_path / "cut.wav"))
