"""Shared fixtures: tiny real models and a real photograph (no downloads)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import fedmjp.models  # noqa: F401  (registers the models with timm)
import timm

from fedmjp.data.disk_cache import CACHE_ENV
from fedmjp.launch.flower_config import NO_PRESTART_ENV
from fedmjp.launch.processes import free_port, kill_by_env
from fedmjp.launch.scratch import scratch_dir

from .flower_runs import simulate_sweep

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
# The suite's own cache (fedmjp.data.disk_cache: partitions, labels, built-in data sets), empty at its start:
# what a user's cache holds is no test's business. Set before any process starts, so that Flower runs and Ray
# workers inherit it.
SUITE_CACHE = str(scratch_dir("suite-cache"))  # a killed session's is removed by the next
os.environ[CACHE_ENV] = SUITE_CACHE
CIFAR = os.path.join(SHARED_DATA, "cifar10-subset")


def tiny(name: str = "vit_tiny_patch4_32", **kwargs) -> torch.nn.Module:
    """A 2-block version of a registered model: real architecture, test-sized."""
    kwargs.setdefault("depth", 2)
    return timm.create_model(name, **kwargs)


@pytest.fixture
def photo32() -> torch.Tensor:
    """A real photograph (scikit-image's astronaut) as a (1, 3, 32, 32) batch in [0, 1]."""
    from skimage import data
    from torch.nn.functional import interpolate

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return interpolate(img, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.fixture(scope="session")
def cifar() -> tuple[torch.Tensor, torch.Tensor]:
    """16 held-out CIFAR-10 test images and labels (a client's batch); skips without the shared data."""
    if not os.path.isdir(CIFAR):
        pytest.skip(f"{CIFAR} not present")
    from fedmjp.data.loading import load_dataset

    test = load_dataset("imagefolder", "test", 32, root=CIFAR)
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:16]
    return torch.stack([test[int(i)][0] for i in index]), torch.tensor([test[int(i)][1] for i in index])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One real Ray cluster for the suite's Flower simulations: a head and a second node, 1 CPU each (the
    2 cores a simulation would take on its own), joined with ``--ray-address`` as a sweep of runs would,
    instead of every run starting and stopping its own Ray. A test that watches a run's own Ray
    (test_termination) does not join it. Every process of the cluster carries a mark, so stopping it
    stops exactly those."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = free_port()
    mark = uuid.uuid4().hex
    env = {**os.environ, **NO_PRESTART_ENV, "RAY_USAGE_STATS_ENABLED": "0", "FEDMJP_TEST_RAY": mark}
    temp = scratch_dir("raytest")
    common = ["--num-cpus=1", "--object-store-memory=500000000", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                        *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], check=True, env=env,
                       capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        kill_by_env("FEDMJP_TEST_RAY", mark, timeout=2)  # its state is thrown away: no need to wait long
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def sweep(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> dict[str, Path]:
    """The run directories of the scenarios the test modules put in the suite's sweep (tests/flower_runs.py),
    by scenario name: all of them run once, together, on the suite's Ray cluster."""
    return simulate_sweep(tmp_path_factory.mktemp("sweep"), ray_cluster)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SUITE_CACHE, ignore_errors=True)
