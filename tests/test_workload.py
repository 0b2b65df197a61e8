"""What a federation member computes, without Flower: batches, held-out split, repeatability."""

from __future__ import annotations

import numpy as np

from fedmjp.scenario import Arm, parse_scenario
from fedmjp.workload import client_batches, dataset, heldout_indices, partition_indices, server_evaluates


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
