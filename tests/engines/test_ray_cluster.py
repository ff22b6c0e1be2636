"""The ray engine on a two-node Ray cluster on this machine: trials run on both nodes."""

from __future__ import annotations

from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from se_search.engines.ray_tune import RayEngine
from se_search.space import load_space
from se_search.storage.store import ResultsStore
from se_search.testing.standin import StandIn
from tests.conftest import ASSETS


def test_trials_run_on_both_nodes_and_record_their_node(tmp_path: Path) -> None:
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        space = load_space(
            ASSETS / "e2e.yaml",
            {
                "storage": f"sqlite:///{tmp_path / 'cluster.db'}",
                "search.engine": "ray",
                "search.ray.address": cluster.address,
                "search.ray.max_concurrent_trials": 2,
                "search.checkpoints": "none",
                "evaluation.epochs": 2,
            },
        )
        # Each trial takes a whole node's CPU: two at once must use both nodes.
        summary = RayEngine(space, evaluator=StandIn(seconds_per_epoch=1.0)).run()
        assert summary.finished == 4
        ray.init(address=cluster.address)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        recorded = [c.node for c in ResultsStore(space.storage).candidates("e2e")]
        assert len(recorded) == 4 and set(recorded) == nodes and len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
