"""Shared fixtures: small synthetic data sets written once per test session."""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmac.data.synthetic import generate

SMALL_DATA = {"n_classes": 3, "clips_per_class": 5, "noise_files": (4, 2, 2), "seed": 7}
TINY_DATA = {"n_classes": 2, "clips_per_class": 5, "noise_files": (3, 1, 1), "seed": 3}


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A read-only synthetic ESC-50 + WHAM! folder: 3 classes, 5 clips each, 8 noise files."""
    return generate(str(tmp_path_factory.mktemp("synthetic") / "data"), **SMALL_DATA)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A read-only synthetic ESC-50 + WHAM! folder: 2 classes, 5 clips each (6 train, 2 valid, 2 test), 5 noise files."""
    return generate(str(tmp_path_factory.mktemp("tiny") / "data"), **TINY_DATA)


@pytest.fixture
def esc50_copy(synthetic_data, tmp_path):
    """A private copy of the synthetic ESC-50 folder that a test may change."""
    folder = tmp_path / "ESC50"
    shutil.copytree(synthetic_data["esc50_folder"], folder)
    return folder


def tiny_run_flags(esc50_folder, output_folder, n_classes=2):
    """Command-line flags of a tiny CPU run: width 1/32, random classifier, batch 2, no workers."""
    return [
        "--data_folder",
        str(esc50_folder),
        "--output_folder",
        str(output_folder),
        "--use_pretrained",
        "False",
        "--width",
        "0.03125",
        "--n_classes",
        str(n_classes),
        "--batch_size",
        "2",
        "--num_workers",
        "0",
        "--noise_num_workers",
        "0",
        "--interpretations_per_stage",
        "2",
    ]
