"""The in-process federated loop (no Flower, no Ray) does the Flower run's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedmjp.errors import InputError
from fedmjp.launch.inprocess import simulate_in_process
from fedmjp.scenario import parse_scenario
from tests.flower_runs import in_sweep, scenario

# FedAvg on 3 clients of which 2 are sampled a round (the seeded sampler matters), a plain ViT and a
# pruned MJP arm (the client's mod prunes): 2 rounds, no attacks. Local SGD, not Adam: the attention's
# key bias has an exactly-zero gradient, and Adam divides its rounding noise (which differs with the
# thread count) by its own size into full steps (measured 1e-4 apart with AdamW; 4e-7 elsewhere).
TRAINED = in_sweep(scenario(
    name="in-process", clients={"num_clients": 3, "per_round": 2, "cpus": 1},
    training={"rounds": 2, "mode": "fedavg", "batch_size": 4, "local_steps": 2, "optimizer": "sgd", "lr": 0.05,
              "server_optimizer": "sgd", "server_lr": 1.0},
    model={"name": "vit_tiny_patch4_32", "kwargs": {"depth": 1}}, audit={"attacks": []},
    arms={"vit": {}, "mjp-pruned": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}},
                                    "defence": {"prune": 0.5}}},
))


def _metrics(run_dir: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "arms" / arm / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides, field", [
    ({"audit": {"server": {"kind": "imprint"}}}, "audit.server.kind"),
    ({"audit": {"attacks": []}, "arms": {"run": {"defence": {"dp": {"epsilon": 10.0}}}}}, "defence.dp"),
])
def test_what_needs_flower_is_refused_naming_the_field(tmp_path: Path, overrides: dict, field: str) -> None:
    with pytest.raises(InputError, match=rf"^arms\.run\.{field}: not available in-process"):
        simulate_in_process(parse_scenario(scenario(**overrides)), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing half-written


@pytest.mark.slow
def test_in_process_rounds_equal_the_flower_run_on_the_cpu(tmp_path: Path, sweep: dict[str, Path]) -> None:
    flower = sweep[TRAINED["name"]]
    local = tmp_path / "local"
    simulate_in_process(parse_scenario(TRAINED), local)
    for arm in TRAINED["arms"]:
        ours, theirs = _metrics(local, arm), _metrics(flower, arm)
        assert [r["round"] for r in ours] == [r["round"] for r in theirs] == [1, 2]
        for mine, other in zip(ours, theirs):
            assert mine["accuracy"] == pytest.approx(other["accuracy"], abs=1 / 40)  # at most one of 40 images
            assert mine["train_loss"] == pytest.approx(other["train_loss"], rel=1e-4)
        a = torch.load(local / "arms" / arm / "final_weights.pt")
        b = torch.load(flower / "arms" / arm / "final_weights.pt")
        assert a.keys() == b.keys()
        for name in a:
            # Clients in Ray run one thread, here two: the sums' order differs, nothing else. Pruning keeps
            # the largest half of each update by magnitude, so an entry within rounding of the threshold
            # may be kept in one run and zeroed in the other: a handful of entries, never a block.
            differ = ~torch.isclose(a[name], b[name], atol=1e-5, rtol=1e-4)
            allowed = max(2, a[name].numel() // 1000) if "pruned" in arm else 0
            assert int(differ.sum()) <= allowed, (arm, name, int(differ.sum()))


def test_simulate_in_process_runs_every_seed_into_its_own_run_directory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import fedmjp.commands.simulate  # noqa: F401  (registers the command)
    from fedmjp.cli import app
    from fedmjp.federation.rundir import read_seeds, seed_dirs
    from tests.flower_runs import write_scenario

    content = {**TRAINED, "training": {**TRAINED["training"], "rounds": 1, "local_steps": 1}}
    path = write_scenario(tmp_path, content)
    done = CliRunner().invoke(app, ["simulate", str(path), "--out", str(tmp_path / "run"), "--seeds", "0,1",
                                    "--in-process", "--json"])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(printed["seeds"]) == {"0", "1"} and set(printed["seeds"]["0"]) == set(TRAINED["arms"])
    assert read_seeds(tmp_path / "run") == [0, 1] and list(seed_dirs(tmp_path / "run")) == [0, 1]
    for seed, folder in seed_dirs(tmp_path / "run").items():
        for arm in TRAINED["arms"]:
            assert _metrics(folder, arm)[-1]["accuracy"] == printed["seeds"][str(seed)][arm]["accuracy"]
    # the two seeds are two starts: the same arm's weights differ
    a, b = (torch.load(f / "arms" / "vit" / "final_weights.pt") for f in seed_dirs(tmp_path / "run").values())
    assert not torch.equal(a["head.weight"], b["head.weight"])


@pytest.mark.parametrize("seeds", ["", "a,1", "1,1", "-1"])
def test_bad_seeds_option_exits_2_with_one_line(tmp_path: Path, seeds: str) -> None:
    from typer.testing import CliRunner

    import fedmjp.commands.simulate  # noqa: F401
    from fedmjp.cli import app
    from tests.flower_runs import write_scenario

    path = write_scenario(tmp_path, TRAINED)
    done = CliRunner().invoke(app, ["simulate", str(path), "--out", str(tmp_path / "run"), "--seeds", seeds])
    assert done.exit_code == 2 and "--seeds:" in done.output and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
