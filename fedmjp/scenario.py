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
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .catalog import OWN_MODELS, check_attack, did_you_mean, known_model, model_classes
from .errors import InputError
from .protocol import Optimizer


class Strict(BaseModel):
    # A field's docstring is its description (the scenario reference, docs/scenario.md, is generated from them).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Partitioning(Strict):
    """How the training split is divided among the clients (flwr-datasets' partitioners)."""

    method: Literal["iid", "dirichlet", "shards"] = "iid"
    """``iid``: equal random shares; ``dirichlet``: each class spread by a Dirichlet(alpha) draw (non-IID);
    ``shards``: the examples sorted by label and cut into shards, ``shards_per_partition`` for each client."""
    alpha: Annotated[float, Field(gt=0)] = 0.5
    """``dirichlet`` only: smaller is more skewed (0.1: a few classes per client; 100: nearly IID)."""
    shards_per_partition: Annotated[int, Field(ge=1)] = 2
    """``shards`` only: label-sorted shards per client (2: about two classes each)."""


ImageSource = Literal["digits", "photos", "cifar10", "cifar100", "imagefolder", "huggingface"]


class Data(Strict):
    """The clients' images: where they come from and how they split."""

    source: ImageSource = "digits"
    """``digits`` (scikit-learn's 8x8 handwritten digits) and ``photos`` (crops of scikit-image's photographs)
    ship with the dependencies; ``cifar10``/``cifar100`` are downloaded once by torchvision;
    ``imagefolder`` reads ``root``; ``huggingface`` loads the data set ``name`` from the Hugging Face hub."""
    root: str | None = None
    """A folder, relative to the scenario file: ``imagefolder``'s images (``root/train/CLASS/*`` and
    ``root/test/CLASS/*``, or ``root/CLASS/*`` split 80/20 by seed); for CIFAR, torchvision's folder or its images
    in that layout (unset: downloaded into ``$FEDMJP_CACHE_DIR/cifar``)."""
    name: str | None = None
    """``huggingface`` only: the data set on the hub, e.g. ``uoft-cs/cifar10``."""
    partitioning: Partitioning = Field(default_factory=Partitioning)
    """How the training split is divided among the clients."""
    test_limit: Annotated[int, Field(ge=1)] | None = None
    """Cap on the held-out test images evaluated each round (unset: all)."""
    evaluate_on: Literal["auto", "server", "clients"] = "auto"
    """Where the global model is evaluated each round: on the server's own copy of the test split, or on the
    clients (each a shard of it; a deployed server need not hold client data). ``auto``: the server when it can
    load the test split, else the clients."""
    crops_per_photo: Annotated[int, Field(ge=5)] | None = None
    """``photos`` only: crops drawn per photo (unset: 100; 80% train). Crops are cut when read, so a
    population of 100,000 clients can have its own examples offline."""

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
    """The federation's clients: how many, how many a round, and what each may use."""

    num_clients: Annotated[int, Field(ge=1)] = 4
    """Clients (partitions of the training split); in a simulation, Flower's SuperNodes."""
    per_round: Annotated[int, Field(ge=1)] | None = None
    """Clients sampled each round (unset, with ``fraction`` unset: all)."""
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    """Or the share of the clients sampled each round (at least one); not with ``per_round``."""
    cpus: Annotated[int, Field(ge=1)] = 1
    """Whole CPUs per simulated client (Flower's federation config takes no fraction of one): a Ray worker
    per this many CPUs trains clients in parallel."""
    gpus: Annotated[float, Field(ge=0)] = 0.0
    """GPUs (or a fraction of one) per simulated client."""
    min_per_round: Annotated[int, Field(ge=1)] = 1
    """A round goes on without failed clients as long as this many replies are usable."""
    timeout: Annotated[float, Field(gt=0)] = 600.0
    """Seconds the server waits for a round's replies; later replies count as faults."""

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


class SecureAggregation(Strict):
    """Flower's SecAgg+ (``SecAggPlusWorkflow`` / ``secaggplus_mod``): the server learns only the round's
    example-weighted mean. Names and defaults are Flower's (``num_shares`` and ``reconstruction_threshold``
    as in Flower's secure-aggregation example); the server sets them, so a dishonest one may tune them."""

    enabled: bool = False
    """Run each training round through SecAgg+ (at least 2 clients a round)."""
    num_shares: Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0, le=1)] = 3
    """Shares each client's secrets are split into (an integer > 2), or a share of the sampled clients."""
    reconstruction_threshold: Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0, le=1)] = 2
    """Shares needed to rebuild a secret (an integer below ``num_shares``), or a share of ``num_shares``: a
    round survives dropouts while every client keeps this many live neighbours."""
    max_weight: Annotated[float, Field(gt=0)] = 1000.0
    """The largest example count a client may weigh; each reply is scaled by count / max_weight before it is
    quantized."""
    clipping_range: Annotated[float, Field(gt=0)] = 8.0
    """Scaled values are clipped to [-clipping_range, clipping_range] before quantization."""
    quantization_range: Annotated[int, Field(ge=2)] = 2**22
    """Integer levels over the clipping range: the step is 2 x clipping_range / quantization_range."""
    modulus_range: Annotated[int, Field(ge=2)] = 2**32
    """Masks are drawn modulo this power of 2 (at most 2**32)."""

    @model_validator(mode="after")
    def _flower_accepts(self) -> SecureAggregation:
        if isinstance(self.num_shares, int) and 1 < self.num_shares <= 2:
            raise ValueError("secure_aggregation.num_shares: an integer number of shares must be greater than 2")
        if (isinstance(self.reconstruction_threshold, int) and isinstance(self.num_shares, int)
                and 1 < self.num_shares <= self.reconstruction_threshold):
            raise ValueError(f"secure_aggregation.reconstruction_threshold: must be below num_shares "
                             f"({self.num_shares})")
        if self.modulus_range & (self.modulus_range - 1) or self.modulus_range > 2**32:
            raise ValueError("secure_aggregation.modulus_range: must be a power of 2, at most 2**32")
        if self.modulus_range <= self.quantization_range:
            raise ValueError(f"secure_aggregation.modulus_range: must exceed quantization_range "
                             f"({self.quantization_range})")
        return self

    @property
    def step(self) -> float:
        """The quantization step of one client's scaled value."""
        return 2 * self.clipping_range / self.quantization_range


class Training(Strict):
    """What the clients compute each round and how the server applies it."""

    rounds: Annotated[int, Field(ge=1)] = 3
    """Federated rounds."""
    mode: Literal["fedsgd", "fedavg"] = "fedsgd"
    """``fedsgd``: each client sends the gradient of one batch; ``fedavg``: each client trains locally and sends
    its update (new minus received weights)."""
    batch_size: Annotated[int, Field(ge=1)] = 8
    """Examples per batch (capped at the client's partition size)."""
    local_epochs: Annotated[int, Field(ge=1)] = 1
    """``fedavg``: passes over the client's partition, unless ``local_steps`` is set."""
    local_steps: Annotated[int, Field(ge=1)] | None = None
    """``fedavg``: a fixed number of local steps instead of ``local_epochs``."""
    optimizer: Optimizer = "sgd"
    """The clients' local optimiser (``fedavg``)."""
    lr: Annotated[float, Field(gt=0)] = 0.05
    """The clients' learning rate (``fedavg``)."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """The clients' SGD momentum (``fedavg``, optimizer ``sgd``)."""
    server_optimizer: Optimizer = "sgd"
    """The server's optimiser over the weighted mean of the replies: gradients (FedSGD) or the pseudo-gradient
    ``-update`` (FedAvg; sgd at server_lr 1.0 is plain FedAvg, adam is FedAdam)."""
    server_lr: Annotated[float, Field(gt=0)] = 1.0
    """The server optimiser's learning rate."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """The clients' learning rate over rounds: constant, or cosine from ``lr`` in round 1 towards 0 in the
    last."""
    augment: bool = False
    """``fedavg``: clients train on random crops (4 px reflect padding) and horizontal flips of their images
    (not with an audit: reconstructions are scored against the stored images)."""
    secure_aggregation: SecureAggregation = Field(default_factory=SecureAggregation)
    """Flower's SecAgg+: the server sees only the sum of the round's replies."""

    def lr_at(self, server_round: int) -> float:
        """The clients' learning rate in this round (1-based)."""
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * (server_round - 1) / self.rounds))


class MJP(Strict):
    """Masked Jigsaw Puzzle settings of an ``mjp_`` model (Ren et al., CVPR 2023)."""

    ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Share of the patches shuffled in a training step (0: no shuffle)."""
    mode: Literal["mjp", "naive"] = "mjp"
    """``mjp``: shuffled positions share one unknown position embedding and the DAL head is trained;
    ``naive``: the shuffle only, with the ordinary position embeddings and no DAL."""
    apply_prob: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Probability that a training step is shuffled at all."""
    min_block: Annotated[int, Field(ge=1)] = 4
    """BEiT-style block selection: the smallest block (in patches) of the shuffled area."""
    per_sample: bool = False
    """One mask and permutation per example instead of one per batch (the reference draws per example)."""
    dal_lambda: Annotated[float, Field(ge=0)] = 0.01
    """Weight of the dense absolute localisation (DAL) L1 loss."""
    dal_normalize: bool = False
    """Scale DAL's (row, column) targets to [0, 1] (the reference uses grid coordinates)."""


class Model(Strict):
    """The model every client trains: a timm name, fedmjp's CIFAR-scale ViTs or their MJP twins."""

    name: str = "vit_tiny_patch4_32"
    """A timm model: fedmjp registers ``vit_tiny_patch4_32`` and ``vit_small_patch4_32`` (32 px, 4-px patches)
    and an ``mjp_`` twin of each and of timm's ViT-Ti/S/B and DeiT-S at 224 px."""
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)
    """Architecture overrides passed to ``timm.create_model`` (e.g. ``{depth: 4, num_classes: 100}``)."""
    mjp: MJP | None = None
    """The jigsaw's settings (``mjp_`` models only; unset: the defaults)."""
    fixed_pos_embed: bool = False
    """A fixed (non-learnable) 2-D sin-cos position embedding: no position-embedding gradient is shared."""
    weights: str | None = None
    """Start from these weights instead of the seeded initialisation: a state dict (a run's
    ``final_weights.pt``) or a checkpoint; relative to the scenario file."""

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
    """``april`` (closed form), ``ig``, ``dlg``, ``april-opt``, ``adaptive`` (the MJP-aware attacker); the
    planting attacks ``imprint`` and ``trap`` are set by ``audit.server.kind``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The attack's budget and settings, e.g. ``{steps: 400, restarts: 2}`` (each attack's options are listed
    in the attacks' documentation; an option the attack does not take is an error)."""

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
    """A data source, as ``data.source``."""
    root: str | None = None
    """Its folder, as ``data.root``."""
    count: Annotated[int, Field(ge=1)] = 256
    """Images the server draws from it."""


class DishonestServer(Strict):
    """``audit.server``: in these rounds the server plants weights for these clients and attacks their replies."""

    kind: Literal["honest", "imprint", "trap"] = "honest"
    """``honest``: no planting; ``imprint``: bins planted in the first block read patches off the reply;
    ``trap``: trap weights (Boenisch et al.), units that fire for about one token each."""
    rounds: Literal["all"] | list[Annotated[int, Field(ge=1)]] = "all"
    """The rounds it plants in: ``all`` or a list."""
    clients: Literal["all"] | Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=0)]] = 1
    """``all``, a number of clients per round (the lowest partition ids sampled), or partition ids."""
    images: ServerImages = Field(default_factory=ServerImages)
    """The server's own images, for the thresholds of its planted bins (never a client's)."""
    knows_check: Literal["none", "original", "current"] = "none"
    """``imprint``: the client model check the server plants past (it is open source): ``none``, the
    ``original`` weight-shape check, or the ``current`` one (fedmjp.attacks.imprint_evasion)."""

    tunes_secure_aggregation: bool = True
    """Under ``training.secure_aggregation``: in its planted rounds the server sets SecAgg+'s settings to suit its
    bins (it sets them every round): each reply unscaled, the finest quantization the modulus allows, a clipping
    range fitted to the gradients its own images give the tensors it reads. ``false``: the scenario's settings."""

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
    """The honest-but-curious server's attacks on every audited reply (none: no audit)."""
    rounds: Literal["all"] | list[Annotated[int, Field(ge=1)]] = "all"
    """The rounds attacked: ``all`` or a list."""
    every: Annotated[int, Field(ge=1)] = 1
    """Attack rounds 1, 1 + every, 1 + 2 every, ... (of ``rounds``)."""
    clients: Literal["all"] | Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=0)]] = "all"
    """``all``, a number of clients per round (the lowest partition ids sampled), or partition ids."""
    store_ground_truth: bool = False
    """Simulation only: store the clients' true images beside the reconstructions, for the report."""
    receipt_timeout: Annotated[float, Field(gt=0)] = 600.0
    """Seconds the server waits for a round's leakage receipts (the clients' scores of the reconstructions)."""
    server: DishonestServer = Field(default_factory=DishonestServer)
    """Honest-but-curious by default; ``kind: imprint`` or ``trap`` makes the server plant weights (dishonest)."""

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
    """Each client attacks its own update before it leaves."""
    attack: AttackSpec = AttackSpec(name="april")
    """The guard's first attack."""
    fallback: list[AttackSpec] = Field(default_factory=lambda: [
        AttackSpec(name="adaptive", options={"steps": 100, "restarts": 1}),
        AttackSpec(name="ig", options={"steps": 100, "restarts": 1}),
    ])
    """Tried in order where ``attack`` does not apply (batch > 1, several FedAvg steps, a partition smaller than
    the batch): adaptive judges an MJP model's gradient (or one SGD step), ig any reply, replaying a FedAvg
    update with the client's own local settings. The default budget (100 steps, 1 restart) is what a 2-core
    client affords each round, and under-reads leakage (docs/results/settings.md): raise it where time
    allows."""
    on_unjudged: Literal["send", "withhold"] = "withhold"
    """What leaves when no attack judged the update: ``withhold`` (an error reply) or ``send``."""
    max_psnr: float = 30.0
    """Above this PSNR (dB) against its own batch, the client withholds or noises the update."""
    action: Literal["withhold", "noise"] = "withhold"
    """What the client does with an update that leaks above ``max_psnr``."""
    noise_scale: Annotated[float, Field(gt=0)] = 1.0
    """``noise``: Gaussian noise std relative to the update's RMS."""
    model_check: bool = False
    """Before training, refuse received weights with planted structure (fedmjp.defences.model_check)."""

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
    """The L2 norm each reply is clipped to (all tensors together)."""
    epsilon: Annotated[float, Field(gt=0)]
    """The privacy budget per round (required)."""
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    """The Gaussian mechanism's delta."""
    sensitivity: Annotated[float, Field(gt=0)] | None = None
    """Unset: ``clipping_norm`` (the add/remove-one sensitivity of a clipped reply)."""

    @property
    def noise_std(self) -> float:
        import math

        sensitivity = self.clipping_norm if self.sensitivity is None else self.sensitivity
        return sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon


class Defence(Strict):
    """Client-side defences applied to the reply before it leaves (Flower client mods)."""

    dp: DP | None = None
    """Local differential privacy (unset: off)."""
    prune: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Zero this fraction of the smallest-magnitude entries of every tensor (Zhu et al., DLG)."""


class Faults(Strict):
    """Faults injected on purpose, to test a setup: each round, each sampled client fails
    with probability ``fraction`` (seeded), with one of ``kinds``."""

    fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Probability that a sampled client fails in a round."""
    kinds: list[Literal["raise", "nan", "slow", "shape"]] = Field(default_factory=lambda: ["raise"], min_length=1)
    """How a failing client fails, drawn among these: ``raise`` (an exception), ``nan`` (a reply of NaNs),
    ``slow`` (it sleeps ``slow_seconds`` first), ``shape`` (a wrongly shaped reply)."""
    slow_seconds: Annotated[float, Field(ge=0)] = 30.0
    """``slow``: seconds the client sleeps before training."""


class Ray(Strict):
    """The Ray cluster a simulation runs on."""

    address: str | None = None
    """Join a running Ray cluster (also taken from ``RAY_ADDRESS`` or ``--ray-address``; unset: a cluster of the
    run's own)."""


class Arm(Strict):
    """One fully resolved federation: what a single simulation runs."""

    name: str = "run"
    """The arm's name (its key under ``arms``)."""
    seed: int = 0
    """Fixes the data split, the initial weights, the sampling and the jigsaw draws."""
    device: str = "auto"
    """``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    data: Data = Field(default_factory=Data)
    """The clients' images."""
    clients: Clients = Field(default_factory=Clients)
    """The clients."""
    training: Training = Field(default_factory=Training)
    """What a round computes."""
    model: Model = Field(default_factory=Model)
    """The model."""
    audit: Audit = Field(default_factory=Audit)
    """The adversarial server: its attacks, on which rounds and clients."""
    guard: Guard = Field(default_factory=Guard)
    """A client-side guard that attacks its own update before sending it."""
    defence: Defence = Field(default_factory=Defence)
    """Client-side defences applied to the reply (DP, pruning)."""
    faults: Faults = Field(default_factory=Faults)
    """Faults injected on purpose."""
    ray: Ray = Field(default_factory=Ray)
    """The Ray cluster."""

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
    def _secure_aggregation_fits(self) -> Arm:
        secagg = self.training.secure_aggregation
        if not secagg.enabled:
            return self
        clients = self.clients.sampled_per_round
        where = "training.secure_aggregation"
        if clients < 2:
            raise ValueError(f"{where}.enabled: SecAgg+ needs at least 2 clients a round (clients.per_round "
                             f"gives {clients})")
        if clients * secagg.quantization_range >= secagg.modulus_range:
            raise ValueError(f"{where}.quantization_range: {clients} clients x {secagg.quantization_range} levels "
                             f"exceed modulus_range ({secagg.modulus_range}): the masked sum would wrap")
        # Under SecAgg+ the server cannot single out a reply: it plants for all, attacks the sum, and cannot
        # spot a corrupt reply (a NaN or misshaped one breaks the sum rather than being set aside).
        if self.audit.server.kind != "honest" and self.audit.server.clients != "all":
            raise ValueError(f"audit.server.clients: under {where} the server plants for every sampled "
                             f"client (set all)")
        if self.audit.clients != "all":
            raise ValueError(f"audit.clients: under {where} the server attacks the aggregate of all clients "
                             f"(set all)")
        if bad := [kind for kind in self.faults.kinds if kind in ("nan", "shape")]:
            raise ValueError(f"faults.kinds: {bad[0]} is not injected under {where} (a client drops out with "
                             f"raise or slow)")
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


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys an arm takes at ``loc`` (the section holding its last part), for a did-you-mean."""
    model: Any = Arm
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            continue  # a list index or a union's branch name
        sections = [a for a in (field.annotation, *get_args(field.annotation))
                    if isinstance(a, type) and issubclass(a, BaseModel)]
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)


def _first_error(exc: ValidationError, prefix: str) -> str:
    error = exc.errors()[0]
    parts = [p for p in (prefix, _location(error["loc"])) if p]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        message = "unknown key" + did_you_mean(key, _keys_at(error["loc"]))
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
    top = sorted(ARM_KEYS | {"name", "arms", "seeds"})
    unknown = sorted(set(raw) - set(top))
    if unknown:
        raise InputError(f"{label}: {unknown[0]}: unknown key{did_you_mean(str(unknown[0]), top)}")
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
