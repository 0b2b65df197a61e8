"""What a federation member computes, without Flower: batches, held-out split, repeatability."""

from __future__ import annotations

import numpy as np

from fedmjp.scenario import Arm, parse_scenario
from fedmjp.federation.workload import client_batches, dataset, heldout_indices, partition_indices, server_evaluates


def arm(**sections: dict) -> object:
    return parse_scenario({"data": {"source": "photos"}, **sections}).arms["run"]


def test_test_limit_evaluates_a_seeded_sample_of_every_class() -> None:
    limited = arm(data={"source": "photos", "test_limit": 40})
    chosen = heldout_indices(limited)
    targets = dataset(limited, "test").targets
    assert len(chosen) == 40 and len(set(chosen)) == 40
    assert len(set(targets[chosen])) >= 6  # the split is sorted by class: the first 40 are two
    assert np.array_equal(chosen, heldout_indices(limited))


def test_fedsgd_uses_one_batch_of_the_clients_own_partition() -> None:
    a = arm(clients={"num_clients": 4}, training={"batch_size": 8})
    batches = client_batches(a, 1, server_round=3)
    assert len(batches) == 1 and len(batches[0]) == 8
    assert set(batches[0]) <= set(partition_indices(a, 1))
    assert np.array_equal(batches[0], client_batches(a, 1, server_round=3)[0])
    assert not np.array_equal(batches[0], client_batches(a, 1, server_round=4)[0])


def test_fedavg_local_steps_fix_the_number_of_batches() -> None:
    a = arm(clients={"num_clients": 4}, training={"mode": "fedavg", "batch_size": 16, "local_steps": 7})
    batches = client_batches(a, 0, server_round=1)
    assert len(batches) == 7 and all(len(b) == 16 for b in batches)


def test_evaluation_shards_cover_the_heldout_set_once() -> None:
    arm = parse_scenario({"data": {"source": "digits", "test_limit": 50}}).arms["run"]
    shards = [heldout_indices(arm)[k::3] for k in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(heldout_indices(arm).tolist())


def test_server_evaluates_where_it_has_the_test_split_and_clients_otherwise() -> None:
    # A deployed server reads the same arm but may lack the clients' data folder.
    remote = Arm.model_validate({"data": {"source": "imagefolder", "root": "/clients/only/data"}})
    assert not server_evaluates(remote)
    assert server_evaluates(Arm.model_validate({"data": {"source": "digits"}}))
    assert not server_evaluates(Arm.model_validate({"data": {"source": "digits", "evaluate_on": "clients"}}))


def test_a_cosine_schedule_falls_from_lr_over_the_rounds_and_the_client_reports_the_rounds_lr() -> None:
    import math

    import pytest

    from fedmjp.federation.workload import build_model, client_round

    t = arm(training={"rounds": 4, "lr": 0.1, "lr_schedule": "cosine"}).training
    assert [t.lr_at(r) for r in (1, 3)] == [0.1, pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)))]
    assert t.lr_at(4) < t.lr_at(3) < t.lr_at(2) < t.lr_at(1) and arm().training.lr_at(3) == arm().training.lr
    fedavg = arm(model={"kwargs": {"depth": 1}}, training={"mode": "fedavg", "local_steps": 1, "rounds": 4, "lr": 0.1,
                                                           "lr_schedule": "cosine"})
    weights = build_model(fedavg).state_dict()
    assert client_round(fedavg, weights, 0, 3).result.settings.lr == pytest.approx(t.lr_at(3))


def test_augmented_clients_train_on_new_crops_seeded_per_round_and_are_never_audited() -> None:
    import pytest
    import torch

    from fedmjp.errors import InputError
    from fedmjp.federation.workload import build_model, client_round

    spec = {"model": {"kwargs": {"depth": 1}}, "training": {"mode": "fedavg", "local_steps": 2}}
    plain = arm(**spec)
    augmented = arm(**{**spec, "training": {**spec["training"], "augment": True}})
    weights = build_model(plain).state_dict()

    def update(a: Arm) -> torch.Tensor:
        return client_round(a, weights, 0, 1).result.tensors["pos_embed"]

    assert torch.equal(update(augmented), update(augmented))  # seeded: the run repeats
    assert not torch.equal(update(augmented), update(plain))
    for extra, message in (({"audit": {"attacks": [{"name": "ig"}]}}, "score reconstructions against the stored"),
                           ({"training": {"augment": True}}, "applies to FedAvg")):
        raw = {**spec, "training": {**spec["training"], "augment": True}, **extra}
        with pytest.raises(InputError, match=message):
            parse_scenario({"data": {"source": "photos"}, **raw})
