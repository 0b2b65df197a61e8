"""Scenario files: a pydantic schema, YAML loading, ``--set`` overrides, and arms.

A scenario fully describes a run (with its seed). ``arms`` are named variants that override
any part of the base scenario; they run one after the other with the same seed and split.
Every error names the field that is wrong, as one line.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .catalog import OWN_MODELS, check_attack, did_you_mean, known_model, model_classes
from .errors import InputError
from .protocol import Optimizer


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Partitioning(Strict):
    method: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: Annotated[float, Field(gt=0)] = 0.5
    shards_per_partition: Annotated[int, Field(ge=1)] = 2


ImageSource = Literal["digits", "photos", "cifar10", "cifar100", "imagefolder", "huggingface"]


class Data(Strict):
    source: ImageSource = "digits"
    root: str | None = None
    name: str | None = None
    partitioning: Partitioning = Field(default_factory=Partitioning)
    # Cap on the held-out test images evaluated each round (None: all).
    test_limit: Annotated[int, Field(ge=1)] | None = None
    # Where the global model is evaluated each round: on the server's own copy of the test split, or
    # on the clients (each a shard of it; a deployed server need not hold client data). "auto": the
    # server when it can load the test split, else the clients.
    evaluate_on: Literal["auto", "server", "clients"] = "auto"
    # photos only: crops drawn per photo (default 100; 80% train). Crops are cut when read, so a
    # population of 100,000 clients can have its own examples offline.
    crops_per_photo: Annotated[int, Field(ge=5)] | None = None

    @model_validator(mode="after")
    def _paths(self) -> Data:
        if self.crops_per_photo is not None and self.source != "photos":
            raise ValueError("data.crops_per_photo applies to the photos source only")
        if self.source == "imagefolder" and not self.root:
            raise ValueError("data.root is required for an imagefolder source")
        if self.source == "huggingface" and not self.name:
            raise ValueError("data.name (a Hugging Face data set) is required for a huggingface source")
        return self


class Clients(Strict):
    num_clients: Annotated[int, Field(ge=1)] = 4
    per_round: Annotated[int, Field(ge=1)] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    # Whole CPUs per simulated client: Flower's federation config takes no fraction of one.
    cpus: Annotated[int, Field(ge=1)] = 1
    gpus: Annotated[float, Field(ge=0)] = 0.0
    # A round goes on without failed clients as long as this many replies are usable.
    min_per_round: Annotated[int, Field(ge=1)] = 1
    # Seconds the server waits for a round's replies; later replies count as faults.
    timeout: Annotated[float, Field(gt=0)] = 600.0

    @model_validator(mode="after")
    def _sampling(self) -> Clients:
        if self.per_round is not None and self.fraction is not None:
            raise ValueError("clients: give per_round or fraction, not both")
        if self.per_round is not None and self.per_round > self.num_clients:
            raise ValueError(
                f"clients.per_round ({self.per_round}) exceeds clients.num_clients ({self.num_clients})"
            )
        if self.min_per_round > self.sampled_per_round:
            raise ValueError(
                f"clients.min_per_round ({self.min_per_round}) exceeds the clients sampled per round "
                f"({self.sampled_per_round})"
            )
        return self

    @property
    def sampled_per_round(self) -> int:
        if self.per_round is not None:
            return self.per_round
        if self.fraction is not None:
            return max(1, int(round(self.fraction * self.num_clients)))
        return self.num_clients


class Training(Strict):
    rounds: Annotated[int, Field(ge=1)] = 3
    mode: Literal["fedsgd", "fedavg"] = "fedsgd"
    batch_size: Annotated[int, Field(ge=1)] = 8
    # FedAvg: local epochs over the partition, or a fixed number of local steps.
    local_epochs: Annotated[int, Field(ge=1)] = 1
    local_steps: Annotated[int, Field(ge=1)] | None = None
    optimizer: Optimizer = "sgd"
    lr: Annotated[float, Field(gt=0)] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    server_optimizer: Optimizer = "sgd"
    server_lr: Annotated[float, Field(gt=0)] = 1.0
    # The clients' learning rate over rounds: constant, or cosine from lr in round 1 towards 0 in the last.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # FedAvg clients train on random crops (4 px reflect padding) and horizontal flips of their images.
    augment: bool = False

    def lr_at(self, server_round: int) -> float:
        """The clients' learning rate in this round (1-based)."""
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * (server_round - 1) / self.rounds))


class MJP(Strict):
    ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    mode: Literal["mjp", "naive"] = "mjp"
    apply_prob: Annotated[float, Field(ge=0, le=1)] = 1.0
    min_block: Annotated[int, Field(ge=1)] = 4
    per_sample: bool = False
    dal_lambda: Annotated[float, Field(ge=0)] = 0.01
    dal_normalize: bool = False


class Model(Strict):
    name: str = "vit_tiny_patch4_32"
    # Architecture overrides passed to timm.create_model (e.g. depth).
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)
    mjp: MJP | None = None
    # A fixed (non-learnable) 2-D sin-cos position embedding: no pos_embed gradient is shared.
    fixed_pos_embed: bool = False
    # Start from these weights instead of the seeded init: a state dict (a run's final_weights.pt) or a
    # checkpoint; relative to the scenario file.
    weights: str | None = None

    @model_validator(mode="after")
    def _known(self) -> Model:
        if not known_model(self.name):
            raise ValueError(f"model.name: unknown model {self.name!r}{did_you_mean(self.name, list(OWN_MODELS))}")
        if self.mjp is not None and not self.name.startswith("mjp_"):
            raise ValueError(f"model.mjp: {self.name!r} is not an MJP model (use its mjp_ twin)")
        return self

    def num_classes(self) -> int | None:
        """Outputs of the classifier head (None when the model's registration does not say)."""
        if "num_classes" in self.kwargs:
            return int(self.kwargs["num_classes"])
        return model_classes(self.name)

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``timm.create_model`` (architecture plus MJP settings)."""
        kwargs: dict[str, Any] = dict(self.kwargs)
        if self.name.startswith("mjp_"):
            mjp = self.mjp or MJP()
            kwargs.update(
                mjp_ratio=mjp.ratio,
                mjp_mode=mjp.mode,
                mjp_apply_prob=mjp.apply_prob,
                mjp_min_block=mjp.min_block,
                mjp_per_sample=mjp.per_sample,
                dal_lambda=mjp.dal_lambda,
                dal_normalize=mjp.dal_normalize,
            )
        return kwargs


class AttackSpec(Strict):
    """An attack and its options (budget and settings, passed to its factory), checked by whoever holds it
    (``Audit``, ``Guard``) so that an error names where the attack sits."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    def check(self, where: str) -> None:
        check_attack(self.name, self.options, where)


def chosen(clients: Literal["all"] | int | list[int], partition_ids: list[int]) -> list[int]:
    """The partitions a ``clients:`` setting picks among those sampled: all, the lowest n, or these ids."""
    ordered = sorted(partition_ids)
    if clients == "all":
        return ordered
    if isinstance(clients, int):
        return ordered[:clients]
    return [p for p in ordered if p in clients]


class ServerImages(Strict):
    """The dishonest server's own images (thresholds of its planted bins): a public set, never a client's."""

    source: ImageSource = "photos"
    root: str | None = None
    count: Annotated[int, Field(ge=1)] = 256


class DishonestServer(Strict):
    """``audit.server``: in these rounds the server plants weights for these clients and attacks their replies."""

    kind: Literal["honest", "imprint", "trap"] = "honest"
    rounds: Literal["all"] | list[Annotated[int, Field(ge=1)]] = "all"
    # "all", a number of clients per round (the lowest partition ids sampled), or partition ids.
    clients: Literal["all"] | Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=0)]] = 1
    images: ServerImages = Field(default_factory=ServerImages)
    # imprint: the client model check the server plants past (it is open source): "none", the "original"
    # weight-shape check, or the "current" one (fedmjp.attacks.imprint_evasion).
    knows_check: Literal["none", "original", "current"] = "none"

    @model_validator(mode="after")
    def _evasion_planted(self) -> DishonestServer:
        if self.knows_check != "none" and self.kind != "imprint":
            raise ValueError(f"audit.server.knows_check: only an imprint server plants past the check "
                             f"(kind is {self.kind!r})")
        return self

    def attack_options(self) -> dict[str, str]:
        """Options of the planting attack beyond its seed."""
        return {"knows_check": self.knows_check} if self.knows_check != "none" else {}

    def plants(self, server_round: int) -> bool:
        return self.kind != "honest" and (self.rounds == "all" or server_round in self.rounds)

    def targets(self, partition_ids: list[int]) -> list[int]:
        return chosen(self.clients, partition_ids)


class Audit(Strict):
    """The adversarial server: which attacks, on which rounds and clients."""

    attacks: list[AttackSpec] = Field(default_factory=list)
    # "all", or a list of rounds; ``every`` k attacks rounds 1, 1+k, 1+2k, ...
    rounds: Literal["all"] | list[Annotated[int, Field(ge=1)]] = "all"
    every: Annotated[int, Field(ge=1)] = 1
    # "all", a number of clients per round (the lowest partition ids sampled), or partition ids.
    clients: Literal["all"] | Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=0)]] = "all"
    # Simulation only: store the clients' true images beside reconstructions for the report.
    store_ground_truth: bool = False
    # Seconds the server waits for the round's leakage receipts.
    receipt_timeout: Annotated[float, Field(gt=0)] = 600.0
    # Honest-but-curious by default; ``kind: imprint`` makes the server plant weights (dishonest).
    server: DishonestServer = Field(default_factory=DishonestServer)

    def attacks_round(self, server_round: int) -> bool:
        if self.rounds != "all" and server_round not in self.rounds:
            return False
        return (server_round - 1) % self.every == 0

    def targets(self, partition_ids: list[int]) -> list[int]:
        return chosen(self.clients, partition_ids)

    @model_validator(mode="after")
    def _attacks_known(self) -> Audit:
        for i, spec in enumerate(self.attacks):
            spec.check(f"audit.attacks.{i}")
        return self


class Guard(Strict):
    """A client-side guard: the client attacks its own update before it leaves.

    The attacks are tried in order, ``attack`` then each of ``fallback``; the first that applies to what the
    client sends judges it. When none does (or each fails), ``on_unjudged`` decides.
    """

    enabled: bool = False
    attack: AttackSpec = AttackSpec(name="april")
    # Tried in order where ``attack`` does not apply (batch > 1, several FedAvg steps, a partition smaller
    # than the batch): adaptive judges an MJP model's gradient (or one SGD step), ig any reply, replaying
    # a FedAvg update with the client's own local settings. The default budget (100 steps, 1 restart) is what a
    # 2-core client affords each round, and under-reads leakage (docs/results/settings.md): raise it where
    # time allows.
    fallback: list[AttackSpec] = Field(default_factory=lambda: [
        AttackSpec(name="adaptive", options={"steps": 100, "restarts": 1}),
        AttackSpec(name="ig", options={"steps": 100, "restarts": 1}),
    ])
    # What leaves when no attack judged the update: "withhold" (an error reply, code 7001) or "send".
    on_unjudged: Literal["send", "withhold"] = "withhold"
    # Above this PSNR (dB) against its own batch, the client withholds or noises the update.
    max_psnr: float = 30.0
    action: Literal["withhold", "noise"] = "withhold"
    # Gaussian noise std relative to the update's RMS, for action "noise".
    noise_scale: Annotated[float, Field(gt=0)] = 1.0
    # Before training, refuse received weights with planted structure (fedmjp.defences.model_check).
    model_check: bool = False

    def chain(self) -> list[AttackSpec]:
        """The attacks the guard tries, in order: index 0 is ``attack``, index i the fallback i - 1."""
        return [self.attack, *self.fallback]

    @model_validator(mode="after")
    def _attacks_known(self) -> Guard:
        """An option an attack does not take would fail on every client at run time: refuse it here."""
        self.attack.check("guard.attack")
        for i, spec in enumerate(self.fallback):
            spec.check(f"guard.fallback.{i}")
        return self


def never_applies(spec: AttackSpec, training: Training, model: Model) -> str | None:
    """Why an attack can never apply to what a client of this training sends, or None when it may (whether
    it does is known only at run time, from the batch the client really used)."""
    # An update is a scaled gradient only after one plain SGD step.
    one_sgd_step = training.mode == "fedsgd" or (training.local_steps == 1 and training.optimizer == "sgd")
    if spec.name == "april" and (training.batch_size > 1 or not one_sgd_step):
        return (f"april's closed form needs one example and one plain SGD step (training.batch_size is "
                f"{training.batch_size}, mode {training.mode}, optimizer {training.optimizer})")
    if spec.name == "adaptive" and not model.name.startswith("mjp_"):
        return f"adaptive needs an MJP model (model.name is {model.name!r})"
    if spec.name == "adaptive" and not one_sgd_step:
        return (f"adaptive reads an update only as one plain SGD step (mode {training.mode}, local_steps "
                f"{training.local_steps}, optimizer {training.optimizer})")
    return None


# --- defences (issue 8): client-side DP (Flower's LocalDpMod) and gradient pruning --------------


class DP(Strict):
    """Local differential privacy with Flower's ``LocalDpMod``: each reply is clipped to
    ``clipping_norm`` (L2, all tensors together) and Gaussian noise of std
    ``sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon`` is added to every entry (per round)."""

    clipping_norm: Annotated[float, Field(gt=0)] = 1.0
    epsilon: Annotated[float, Field(gt=0)]
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    # Defaults to clipping_norm (add/remove-one sensitivity of a clipped reply).
    sensitivity: Annotated[float, Field(gt=0)] | None = None

    @property
    def noise_std(self) -> float:
        import math

        sensitivity = self.clipping_norm if self.sensitivity is None else self.sensitivity
        return sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon


class Defence(Strict):
    """Client-side defences applied to the reply before it leaves (Flower client mods)."""

    dp: DP | None = None
    # Zero this fraction of the smallest-magnitude entries of every tensor (Zhu et al., DLG).
    prune: Annotated[float, Field(ge=0, lt=1)] = 0.0


class Faults(Strict):
    """Faults injected on purpose, to test a setup: each round, each sampled client fails
    with probability ``fraction`` (seeded), with one of ``kinds``."""

    fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    kinds: list[Literal["raise", "nan", "slow", "shape"]] = Field(default_factory=lambda: ["raise"], min_length=1)
    slow_seconds: Annotated[float, Field(ge=0)] = 30.0


class Ray(Strict):
    # Join a running Ray cluster (also taken from RAY_ADDRESS when unset).
    address: str | None = None


class Arm(Strict):
    """One fully resolved federation: what a single simulation runs."""

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    data: Data = Field(default_factory=Data)
    clients: Clients = Field(default_factory=Clients)
    training: Training = Field(default_factory=Training)
    model: Model = Field(default_factory=Model)
    audit: Audit = Field(default_factory=Audit)
    guard: Guard = Field(default_factory=Guard)
    defence: Defence = Field(default_factory=Defence)
    faults: Faults = Field(default_factory=Faults)
    ray: Ray = Field(default_factory=Ray)

    @model_validator(mode="after")
    def _attacks_apply(self) -> Arm:
        # The server's other attacks may record "not-applicable" (adaptive on a ViT arm is a control).
        for i, spec in enumerate(self.audit.attacks):
            if spec.name == "april" and (why := never_applies(spec, self.training, self.model)):
                raise ValueError(f"audit.attacks.{i}: {why}")
        if not self.guard.enabled:
            return self
        # A guard must be able to judge what its client sends; one that may send unjudged must not rely on
        # its fallback alone (a fallback that fails would let every update out unjudged).
        misses = [never_applies(spec, self.training, self.model) for spec in self.guard.chain()]
        if all(misses):
            raise ValueError(f"guard.attack: {misses[0]}, and no guard.fallback applies "
                             f"({'; '.join(misses[1:]) or 'none is given'})")
        if self.guard.on_unjudged == "send" and misses[0]:
            raise ValueError(f"guard.on_unjudged: send needs a guard.attack that applies ({misses[0]}); "
                             f"use on_unjudged: withhold to rely on the fallback")
        return self

    @model_validator(mode="after")
    def _augment_unaudited(self) -> Arm:
        if not self.training.augment:
            return self
        if self.training.mode != "fedavg":
            raise ValueError("training.augment: applies to FedAvg's local training (mode fedavg)")
        if self.audit.attacks or self.guard.enabled:
            # Receipts score reconstructions against the stored images, not the augmented ones sent.
            raise ValueError("training.augment: the audit would score reconstructions against the stored images, "
                             "not the augmented ones the client trained on (turn audit.attacks and the guard off)")
        return self

    @model_validator(mode="after")
    def _head_covers_classes(self) -> Arm:
        from .data.sources import class_count

        classes, head = class_count(self.data.source, self.data.root), self.model.num_classes()
        if classes is not None and head is not None and head < classes:
            raise ValueError(f"model.kwargs.num_classes: the model has {head} outputs but data.source "
                             f"{self.data.source!r} has {classes} classes")
        return self


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def _first_error(exc: ValidationError, prefix: str) -> str:
    error = exc.errors()[0]
    parts = [p for p in (prefix, _location(error["loc"])) if p]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    where = ".".join(parts)
    # Model validators already name their field ("clients.per_round ..."): keep only the prefix.
    last = where.split(".")[-1] if where else ""
    if last and message.startswith(last):
        return ".".join([*where.split(".")[:-1], message]) if "." in where else message
    return f"{where}: {message}" if where else message


class Scenario(BaseModel):
    """A scenario file: a base federation plus named arms (overrides of the base)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base: dict[str, Any]
    arms: dict[str, Arm]
    source: str | None = None
    # Run every arm once per seed (``seeds: [0, 1, 2]``); None: once, with each arm's own ``seed``.
    seeds: list[int] | None = None

    def with_seed(self, seed: int) -> Scenario:
        """This scenario with every arm at ``seed`` (a seed fixes the split and the initial weights)."""
        arms = {name: arm.model_copy(update={"seed": seed}) for name, arm in self.arms.items()}
        return self.model_copy(update={"arms": arms, "seeds": None})

    def to_yaml(self) -> str:
        resolved = {
            "name": self.name,
            "arms": {name: arm.model_dump(mode="json") for name, arm in self.arms.items()},
        }
        return yaml.safe_dump(resolved, sort_keys=False)


ARM_KEYS = set(Arm.model_fields) - {"name"}


def _resolve_paths(arm: Arm, base_dir: Path | None) -> Arm:
    """Relative data roots and weights are relative to the scenario file (runs happen in other folders)."""
    if base_dir is None:
        return arm

    def resolved(path: str) -> str:
        return str((base_dir / os.path.expanduser(path)).resolve())

    if arm.data.root:
        arm = arm.model_copy(update={"data": arm.data.model_copy(update={"root": resolved(arm.data.root)})})
    if arm.model.weights:
        arm = arm.model_copy(update={"model": arm.model.model_copy(update={"weights": resolved(arm.model.weights)})})
    return arm


def parse_scenario(raw: Any, source: str | None = None) -> Scenario:
    """Validate a scenario mapping; raise ``InputError`` naming the bad field."""
    label = source or "scenario"
    if not isinstance(raw, dict):
        raise InputError(f"{label}: a scenario must be a mapping of keys to values")
    unknown = set(raw) - ARM_KEYS - {"name", "arms", "seeds"}
    if unknown:
        raise InputError(f"{label}: {sorted(unknown)[0]}: unknown key")
    name = raw.get("name", Path(source).stem if source else "scenario")
    if not isinstance(name, str) or not name:
        raise InputError(f"{label}: name: must be a non-empty string")
    arms_raw = raw.get("arms") or {"run": {}}
    if not isinstance(arms_raw, dict):
        raise InputError(f"{label}: arms: must be a mapping of arm names to overrides")
    seeds = _seeds(raw.get("seeds"), label)
    base = {k: v for k, v in raw.items() if k not in ("name", "arms", "seeds")}
    arms: dict[str, Arm] = {}
    for arm_name, override in arms_raw.items():
        if not isinstance(override, dict):
            raise InputError(f"{label}: arms.{arm_name}: must be a mapping of overrides")
        try:
            arm = Arm.model_validate({**_deep_merge(base, override), "name": str(arm_name)})
        except ValidationError as exc:
            prefix = f"arms.{arm_name}" if override else ""
            raise InputError(f"{label}: {_first_error(exc, prefix)}") from None
        arm = _resolve_paths(arm, Path(source).parent if source else None)
        _check_paths(arm, label)
        arms[str(arm_name)] = arm
    return Scenario(name=name, base=base, arms=arms, source=source, seeds=seeds)


def _seeds(value: Any, label: str) -> list[int] | None:
    """``seeds``: absent, or a non-empty list of distinct non-negative integers."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or \
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise InputError(f"{label}: seeds: must be a non-empty list of non-negative integers, got {value!r}")
    if len(set(value)) != len(value):
        raise InputError(f"{label}: seeds: each seed once, got {value!r}")
    return list(value)


def _check_paths(arm: Arm, label: str) -> None:
    root = arm.data.root
    if root and arm.data.source in ("imagefolder", "huggingface") and not os.path.exists(root):
        raise InputError(f"{label}: data.root: {root} does not exist")
    if arm.model.weights and not os.path.isfile(arm.model.weights):
        raise InputError(f"{label}: arms.{arm.name}.model.weights: {arm.model.weights} is not a file")


def apply_overrides(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=VALUE`` (VALUE parsed as YAML) to a raw scenario mapping."""
    raw = copy.deepcopy(raw)
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise InputError(f"--set: expected KEY=VALUE, got {assignment!r}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set: {key}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"--set: {key}: cannot parse value {value!r}") from None
    return raw


def read_raw(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: scenario file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: not valid YAML{where}") from None
    if raw is None:  # an empty or comment-only file is a mistake, not the default scenario
        raise InputError(f"{path}: the scenario file is empty (it needs at least a model, data or arms)")
    return raw


def load_scenario(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file."""
    raw = apply_overrides(read_raw(path), overrides or [])
    return parse_scenario(raw, source=str(path))
