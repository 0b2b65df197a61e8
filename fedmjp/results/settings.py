"""The two parts of the results and the settings (quick, full) they run in: ``--set`` overrides of the file."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..scenario import Scenario, apply_overrides, parse_scenario, read_raw

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent.parent / "scenarios" / "results-cifar10.yaml"
REFERENCE = "vit"
PARTS = ("privacy", "accuracy")
# What ``PART:KEY=VALUE`` may name: the two parts, and the grid of where users train (every cell).
SCOPES = (*PARTS, "realism")
# Every part ``fedmjp results`` runs, in the order it runs them (the grid starts from the accuracy part's weights;
# the secure-aggregation part trains the accuracy part's ViT again, with SecAgg+; the convergence check re-runs
# the privacy part, some of the secure part's cells and some of the grid's).
RUN_ORDER = (*PARTS, "dishonest", "detector", "realism", "secure", "convergence")

# The accuracy part: a training setting that learns, no attacks (``--set`` overrides of the file).
ACCURACY = [
    "training.mode=fedavg", "training.batch_size=32", "training.local_steps=20", "training.optimizer=adamw",
    "training.lr=0.001", "training.server_optimizer=sgd", "training.server_lr=1.0", "audit.attacks=[]",
    # The whole test split (a smaller test_limit takes a seeded random subset of it).
    "data.test_limit=null",
]
SETTINGS: dict[str, dict[str, list[str]]] = {
    # The accuracy part: a budget that learns on 2 cores (the probes that chose it: docs/results/settings.md).
    "full": {
        "privacy": [],
        "accuracy": [*ACCURACY, "model.kwargs.patch_size=8", "model.kwargs.embed_dim=96", "model.kwargs.num_heads=3",
                     "clients.num_clients=2", "clients.per_round=2", "training.batch_size=64",
                     "training.local_steps=null", "training.local_epochs=1", "training.lr=0.002",
                     "training.lr_schedule=cosine", "training.augment=true", "training.rounds=24"],
    },
    # A 2-block ViT, one attacked round of 4 clients, small attack budgets; the accuracy part a narrower
    # 2-block ViT on 500 test images (its timing: docs/results/settings.md).
    "quick": {
        "privacy": ["model.kwargs.depth=2", "training.rounds=1",
                    "data.test_limit=100",
                    # 4 replies, not 2: an apply_prob 0.5 arm then almost surely shows unshuffled ones (15/16).
                    "clients.num_clients=4", "clients.per_round=4",
                    "audit.attacks=[{name: april}, {name: ig, options: {steps: 100, restarts: 1}}, {name: adaptive}]"],
        "accuracy": [*ACCURACY, "clients.num_clients=2", "clients.per_round=2", "model.kwargs.depth=2",
                     "model.kwargs.embed_dim=96", "model.kwargs.num_heads=3", "training.rounds=4",
                     "data.test_limit=500"],
    },
}

# The arms of the file the accuracy part trains (every kind of defence, one DP level), then accuracy-only
# twins of two of them under a Dirichlet(0.3) split, where federated accuracy suffers most.
ACCURACY_ARMS = ("vit", "naive-0.25", "mjp-0.1", "mjp-0.25", "mjp-0.5", "mjp-0.25-p0.5", "fixed-pe", "dp-eps1e4",
                 "prune-0.9")
NON_IID = {"vit-dirichlet": "vit", "mjp-0.25-dirichlet": "mjp-0.25"}
DIRICHLET = {"method": "dirichlet", "alpha": 0.3}


def part_overrides(part: str, overrides: list[str]) -> list[str]:
    """The user's ``--set`` for one part: unscoped ones apply to both parts, ``PART:KEY=VALUE`` to one."""
    chosen = []
    for override in overrides:
        scope, sep, rest = override.partition(":")
        if sep and scope in SCOPES and "=" not in scope:
            if scope == part:
                chosen.append(rest)
        else:
            chosen.append(override)
    return chosen


def load_part(path: Path, setting: str, part: str, overrides: list[str], arms: list[str] | None) -> Scenario:
    """The scenario of one part: the file, the setting's overrides, the user's ``--set``, selected arms."""
    raw = apply_overrides(read_raw(path), [*SETTINGS[setting][part], *part_overrides(part, overrides)])
    have = [*(raw.get("arms") or {}), *NON_IID]
    if part == "accuracy":
        raw["arms"] = part_arms(raw.get("arms") or {})
    if arms:
        unknown = [a for a in arms if a not in have]
        if unknown:
            raise InputError(f"--arms: unknown arm {unknown[0]!r} in {path} (have {', '.join(have)})")
        raw["arms"] = {name: raw["arms"][name] for name in arms if name in raw["arms"]}
        if not raw["arms"]:
            raise InputError(f"--arms: no arm of the {part} part selected")
    return parse_scenario(raw, source=str(path))


def part_arms(arms: dict) -> dict:
    """The accuracy part's arms: ACCURACY_ARMS found in the file, then the NON_IID twins of those."""
    chosen = {name: arms[name] for name in ACCURACY_ARMS if name in arms}
    for twin, source in NON_IID.items():
        if source in chosen:
            arm = dict(chosen[source] or {})
            chosen[twin] = {**arm, "data": {**(arm.get("data") or {}), "partitioning": dict(DIRICHLET)}}
    return chosen
