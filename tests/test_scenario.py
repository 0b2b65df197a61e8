"""Scenario files: validation errors name the field, exit code 2, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedmjp.errors import InputError
from fedmjp.scenario import apply_overrides, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent


SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
CIFAR_SCENARIOS = [p for p in SHIPPED if "source: cifar10" in p.read_text()]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10-subset"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_scenario_validates_on_a_clone_with_nothing_beside_it(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty cache: CIFAR is not downloaded, and validate does not download it (this machine has no network:
    a download would fail), it checks the split on CIFAR-10's class counts."""
    monkeypatch.setenv("FEDMJP_CACHE_DIR", str(tmp_path))
    scenario = load_scenario(path)
    for arm in scenario.arms.values():
        assert arm.data.root is None or Path(arm.data.root).is_absolute()
    done = run_cli("validate", str(path))
    assert done.returncode == 0, done.stderr
    assert ("50,000 training examples" in done.stdout and "not downloaded yet" in done.stdout) == \
        (path in CIFAR_SCENARIOS)
    assert not (tmp_path / "cifar").exists()


def test_the_cifar_scenarios_ship() -> None:
    assert {p.name for p in CIFAR_SCENARIOS} == {"cifar10-accuracy.yaml", "cifar10-privacy.yaml",
                                                 "dishonest-server.yaml", "results-cifar10.yaml"}


@pytest.mark.skipif(not CIFAR_SUBSET.is_dir(), reason="the shared CIFAR-10 subset is not beside the clone")
@pytest.mark.parametrize("path", CIFAR_SCENARIOS, ids=lambda p: p.name)
def test_the_cifar_scenarios_read_the_local_subset_through_one_override(path: Path) -> None:
    done = run_cli("validate", str(path), "--set", f"data.root={CIFAR_SUBSET}")
    assert done.returncode == 0, done.stderr
    assert "10,000 training examples" in done.stdout and "not downloaded" not in done.stdout


def test_no_file_outside_tests_and_bench_names_the_shared_folder() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    named = [f for f in listed.stdout.splitlines() if f.split("/")[0] not in ("tests", "bench")
             and (ROOT / f).is_file() and re.search(r"\.\./shared|shared/data", (ROOT / f).read_text(errors="ignore"))]
    assert named == []


def test_arms_override_the_base_and_keep_the_rest() -> None:
    scenario = parse_scenario({
        "seed": 3,
        "training": {"rounds": 5, "batch_size": 4},
        "arms": {"vit": {}, "mjp": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}}},
    })
    vit, mjp = scenario.arms["vit"], scenario.arms["mjp"]
    assert vit.model.name == "vit_tiny_patch4_32" and mjp.model.mjp.ratio == 0.25
    assert vit.seed == mjp.seed == 3 and mjp.training.rounds == 5 and mjp.training.batch_size == 4
    assert mjp.model.create_kwargs()["mjp_ratio"] == 0.25


def test_set_overrides_parse_values_as_yaml() -> None:
    raw = apply_overrides({"training": {"rounds": 3}}, ["training.rounds=7", "model.kwargs={depth: 2}"])
    assert raw == {"training": {"rounds": 7}, "model": {"kwargs": {"depth": 2}}}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"training": {"rounds": "many"}}, "training.rounds"),
        ({"training": {"rouns": 3}}, "training.rouns: unknown key (did you mean 'rounds'?)"),
        ({"sedes": [0, 1]}, "sedes: unknown key (did you mean 'seeds'?)"),
        ({"arms": {"a": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratoi": 0.1}}}}},
         "arms.a.model.mjp.ratoi: unknown key (did you mean 'ratio'?)"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"clients": {"num_clients": 2, "per_round": 5}}, "clients.per_round (5) exceeds clients.num_clients (2)"),
        ({"data": {"source": "imagefolder", "root": "/no/such/folder"}}, "data.root: /no/such/folder does not exist"),
        ({"model": {"name": "vit_giant_nonsense"}}, "model.name"),
        ({"model": {"name": "vit_tiny_patch4_32", "mjp": {"ratio": 0.1}}}, "model.mjp"),
        ({"arms": {"mjp": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 2}}}}},
         "arms.mjp.model.mjp.ratio: Input should be less than or equal to 1"),
        ({"arms": {"mjp": {"model": {"mjp": {"ratio": 0.2}}}}}, "arms.mjp.model.mjp: 'vit_tiny_patch4_32'"),
        # The guard must be able to judge what the client sends: its attack or a fallback must apply.
        ({"training": {"batch_size": 4}, "guard": {"enabled": True, "fallback": []}},
         "guard.attack: april's closed form needs one example"),
        ({"training": {"batch_size": 4}, "guard": {"enabled": True, "fallback": [{"name": "adaptive"}]}},
         "guard.attack: april's closed form needs one example and one plain SGD step (training.batch_size is 4"),
        # A guard that may send unjudged must not rest on its fallback alone.
        ({"training": {"mode": "fedavg", "local_steps": 3}, "guard": {"enabled": True, "on_unjudged": "send"}},
         "guard.on_unjudged: send needs a guard.attack that applies"),
        ({"guard": {"enabled": True, "fallback": [{"name": "ig", "options": {"stepz": 5}}]}},
         "guard.fallback.0.options.stepz: ig takes no option 'stepz' (did you mean 'steps'?)"),
        # Every attack's options are checked against what its factory takes, for the server's attacks too.
        ({"audit": {"attacks": [{"name": "ig", "options": {"step": 50}}]}},
         "audit.attacks.0.options.step: ig takes no option 'step' (did you mean 'steps'?)"),
        ({"audit": {"attacks": [{"name": "april", "options": {"step": 50}}]}}, "audit.attacks.0.options.step:"),
        ({"audit": {"attacks": [{"name": "ig", "options": {"steps": 2.5}}]}},
         "audit.attacks.0.options.steps: Input should be a valid integer"),
        ({"audit": {"attacks": [{"name": "ig", "options": {"optimizer": "sgd"}}]}},
         "audit.attacks.0.options.optimizer: Input should be 'adam' or 'lbfgs'"),
        ({"audit": {"attacks": [{"name": "igg"}]}}, "audit.attacks.0.name: unknown attack 'igg' (did you mean 'ig'?)"),
        ({"arms": {"a": {"audit": {"attacks": [{"name": "dlg", "options": {"restart": 2}}]}}}},
         "arms.a.audit.attacks.0.options.restart: dlg takes no option 'restart' (did you mean 'restarts'?)"),
        ({"model": {"name": "mjp_vit_tiny_patch4_23"}}, "model.name: unknown model 'mjp_vit_tiny_patch4_23' (did you "
                                                       "mean 'mjp_vit_tiny_patch4_32'?)"),
        ({"data": {"source": "cifar100"}}, "model.kwargs.num_classes: the model has 10 outputs but data.source "
                                           "'cifar100' has 100 classes"),
    ],
)
def test_bad_scenarios_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_scenario(raw, "s.yaml")
    message = str(info.value)
    assert field in message and "\n" not in message


@pytest.mark.parametrize(
    "training",
    [{"batch_size": 4}, {"mode": "fedavg", "batch_size": 2, "local_steps": 3}],
    ids=["fedsgd-batch-4", "fedavg-3-steps"],
)
def test_a_guard_whose_attack_cannot_apply_is_valid_when_its_fallback_can(training: dict) -> None:
    arm = parse_scenario({"training": training, "guard": {"enabled": True}}).arms["run"]
    assert arm.guard.attack.name == "april" and [s.name for s in arm.guard.fallback] == ["adaptive", "ig"]
    assert arm.guard.on_unjudged == "withhold"


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`fedmjp ARGS` as a user runs it: a new interpreter through the package's entry point."""
    return subprocess.run([sys.executable, "-m", "fedmjp", *args], capture_output=True, text=True, timeout=120)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command line in this process (the same app, exit code and streams; test_validate_accepts_a_good_
    file_and_help_works runs the entry point itself): a new interpreter's imports cost about 4 s a call."""
    from typer.testing import CliRunner

    import fedmjp.commands  # noqa: F401  (registers the sub-commands)
    from fedmjp.cli import app

    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize(
    "content",
    [
        "training: {rounds: zero}\n",
        "training: {rouns: 3}\n",
        "data: {source: imagefolder, root: /missing/data}\n",
        "clients: {num_clients: 2, per_round: 3}\n",
        "training: [unclosed\n",
        "training: {batch_size: 4}\nguard: {enabled: true, fallback: []}\n",
        "audit: {attacks: [{name: ig, options: {step: 50}}]}\n",
    ],
)
def test_simulate_rejects_a_bad_scenario_with_one_line_and_no_run_dir(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    out = tmp_path / "run"
    done = run_cli("simulate", str(path), "--out", str(out))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr
    assert not out.exists()


def test_validate_accepts_a_good_file_and_help_works(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"name": "ok", "arms": {"a": {}, "b": {"seed": 2}}}))
    done = run_process("validate", str(path))
    assert done.returncode == 0 and "2 arm(s)" in done.stdout
    for command in ([], ["simulate"], ["validate"]):
        assert run_process(*command, "--help").returncode == 0
    assert run_process("validate", str(tmp_path / "nope.yaml")).returncode == 2  # a user error's exit code


def test_version_is_the_packages_and_help_lists_commands_in_workflow_order() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"fedmjp {project['version']}"
    panel = run_cli("--help").stdout.split("Commands")[1]
    commands = re.findall(r"^│ ([a-z]+) ", panel, flags=re.MULTILINE)  # a command's first line, not its help's rest
    assert commands == ["validate", "simulate", "audit", "attack", "check", "deploy", "results"]


@pytest.mark.parametrize("content", ["", "\n", "# only a comment\n"])
def test_empty_scenario_file_is_an_error_not_the_default_scenario(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(content)
    done = run_cli("validate", str(path))
    assert done.returncode == 2 and "the scenario file is empty" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_head_as_wide_as_the_classes_is_accepted() -> None:
    raw = {"data": {"source": "cifar100"}, "model": {"kwargs": {"num_classes": 100}}}
    assert parse_scenario(raw).arms["run"].model.num_classes() == 100


def test_missing_scenario_file_is_exit_code_2(tmp_path: Path) -> None:
    done = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "scenario file not found" in done.stderr


def test_model_weights_resolve_against_the_file_and_load_into_the_model(tmp_path: Path) -> None:
    import torch

    from fedmjp.federation.workload import build_model

    spec = {"model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 1}}}
    model = build_model(parse_scenario(spec).arms["run"])
    trained = {k: v + 1 for k, v in model.state_dict().items()}
    (tmp_path / "w").mkdir()
    torch.save(trained, tmp_path / "w" / "final_weights.pt")
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump({**spec, "model": {**spec["model"], "weights": "w/final_weights.pt"}}))
    arm = load_scenario(path).arms["run"]
    assert arm.model.weights == str(tmp_path / "w" / "final_weights.pt")
    loaded = build_model(arm).state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_model_weights_that_are_missing_or_do_not_fit_name_the_field(tmp_path: Path) -> None:
    import torch

    from fedmjp.federation.workload import build_model

    with pytest.raises(InputError, match=r"arms\.run\.model\.weights: .*nothing\.pt is not a file"):
        parse_scenario({"model": {"weights": str(tmp_path / "nothing.pt")}})
    torch.save({"head.weight": torch.zeros(1)}, tmp_path / "other.pt")
    arm = parse_scenario({"model": {"kwargs": {"depth": 1}, "weights": str(tmp_path / "other.pt")}}).arms["run"]
    with pytest.raises(InputError, match=r"arms\.run\.model\.weights: .*other\.pt does not fit the model"):
        build_model(arm)


SMOKE = str(ROOT / "scenarios" / "ci-smoke.yaml")


@pytest.mark.parametrize("mode", [[], ["--in-process", "--seeds", "0,1"]])
def test_more_clients_than_examples_is_one_line_before_anything_runs(tmp_path: Path, mode: list[str]) -> None:
    """1,437 built-in digits cannot go to 5,000 clients: refused before Ray starts or a file is written."""
    out = tmp_path / "run"
    done = run_cli("simulate", SMOKE, "--set", "clients.num_clients=5000", *mode, "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: arms.run.clients.num_clients: 5000 partitions but only 1437 samples\n"
    assert not out.exists()


def test_validate_refuses_a_dirichlet_split_that_gives_up() -> None:
    done = run_cli("validate", SMOKE, "--set", "clients.num_clients=700", "--set", "data.partitioning.method=dirichlet",
                   "--set", "data.partitioning.alpha=0.001")
    assert done.returncode == 2
    assert done.stderr.startswith("error: arms.run.data.partitioning.alpha: dirichlet partitioning failed")
    assert len(done.stderr.strip().splitlines()) == 1
