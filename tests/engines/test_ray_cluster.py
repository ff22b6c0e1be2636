"""The ray engine on a two-node Ray cluster on this machine: trials run on both nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from se_search.engines.ray_tune import RayEngine
from se_search.space import load_space
from se_search.storage.store import ResultsStore
from se_search.testing.standin import StandIn
from tests.conftest import ASSETS


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _nodes(cluster: Cluster) -> set[str]:
    ray.init(address=cluster.address)
    try:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()


def _search(tmp_path: Path, name: str, **overrides: Any) -> list[str | None]:
    """Run a 4-trial stand-in search; the node each trial recorded."""
    space = load_space(
        ASSETS / "e2e.yaml",
        {
            "storage": f"sqlite:///{tmp_path / name}.db",
            "search.engine": "ray",
            "search.checkpoints": "none",
            "evaluation.epochs": 2,
            **overrides,
        },
    )
    summary = RayEngine(space, evaluator=StandIn(seconds_per_epoch=1.0)).run()
    assert summary.finished == 4
    return [c.node for c in ResultsStore(space.storage).candidates("e2e")]


def test_trials_run_on_both_nodes_and_record_their_node(tmp_path: Path, cluster: Cluster) -> None:
    # Each trial takes a whole node's CPU: two at once must use both nodes.
    recorded = _search(
        tmp_path,
        "cluster",
        **{"search.ray.address": cluster.address, "search.ray.max_concurrent_trials": 2},
    )
    nodes = _nodes(cluster)
    assert len(recorded) == 4 and set(recorded) == nodes and len(nodes) == 2


def test_without_an_address_it_starts_its_own_instance_not_the_running_cluster(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's own default joins the cluster RAY_ADDRESS names; the docs promise a local one.
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    recorded = _search(tmp_path, "own", **{"evaluation.epochs": 1})
    assert len(recorded) == 4 and None not in recorded
    assert not set(recorded) & _nodes(cluster)
