"""Tests against a real three-node Ray cluster (`.ci/ray-cluster`): one head and two workers, each in its own
network namespace on 198.18.0.2/.3/.4, so tasks, actors and objects cross real network interfaces.

Skipped unless AGENTRL_RAY_ADDRESS is set; run them as a driver on the head node:

    .ci/ray-cluster up
    .ci/ray-cluster exec .venv/bin/python -m pytest -q -m ray_cluster tests/test_ray_cluster.py
    .ci/ray-cluster down
"""

import os

import pytest

pytestmark = [
    pytest.mark.ray_cluster,
    pytest.mark.skipif(
        not os.environ.get("AGENTRL_RAY_ADDRESS"),
        reason="needs the multi-node Ray cluster: .ci/ray-cluster up, then run pytest via .ci/ray-cluster exec",
    ),
]

NODE_IPS = {"head": "198.18.0.2", "w1": "198.18.0.3", "w2": "198.18.0.4"}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address=os.environ["AGENTRL_RAY_ADDRESS"], log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _where_cls(ray):
    """An actor that says where it runs and reads objects it is handed."""

    @ray.remote(num_cpus=0.1)
    class Where:
        def node(self):
            return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

        def read(self, refs):
            # A list keeps the ref unresolved: the actor fetches the object from its owner's node itself.
            data = ray.get(refs[0])
            return ray.util.get_node_ip_address(), len(data), sum(data[::4096])

    return Where


def test_three_alive_nodes_with_their_ips(ray_cluster):
    ray = ray_cluster
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert sorted(n["NodeManagerAddress"] for n in alive) == sorted(NODE_IPS.values())
    for name, ip in NODE_IPS.items():
        (node,) = [n for n in alive if n["NodeManagerAddress"] == ip]
        assert node["Resources"].get(f"node:agentrl-{name}") == 1
        assert node["Resources"].get("CPU") == 2
    # The driver runs on the head node.
    assert ray.util.get_node_ip_address() == NODE_IPS["head"]


def test_spread_actors_land_on_every_node(ray_cluster):
    ray = ray_cluster
    Where = _where_cls(ray)
    actors = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    try:
        where = ray.get([a.node.remote() for a in actors], timeout=120)
    finally:
        for a in actors:
            ray.kill(a)
    node_ids = {node_id for node_id, _ in where}
    ips = {ip for _, ip in where}
    assert len(node_ids) == 3
    assert ips == set(NODE_IPS.values())


def test_node_affinity_and_custom_resource_place_actors(ray_cluster):
    ray = ray_cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    Where = _where_cls(ray)
    by_ip = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
    actors = []
    try:
        for name, ip in NODE_IPS.items():
            pinned = Where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(by_ip[ip], soft=False)).remote()
            named = Where.options(resources={f"node:agentrl-{name}": 0.01}).remote()
            actors += [pinned, named]
            for a in (pinned, named):
                assert ray.get(a.node.remote(), timeout=120) == (by_ip[ip], ip)
    finally:
        for a in actors:
            ray.kill(a)


def test_object_put_on_driver_is_read_on_other_nodes(ray_cluster):
    ray = ray_cluster
    Where = _where_cls(ray)
    data = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB: in the object store, not inlined
    ref = ray.put(data)
    expected = (len(data), sum(data[::4096]))
    actors = [Where.options(resources={f"node:agentrl-{name}": 0.01}).remote() for name in ("w1", "w2")]
    try:
        got = ray.get([a.read.remote([ref]) for a in actors], timeout=120)
    finally:
        for a in actors:
            ray.kill(a)
    assert got == [(NODE_IPS["w1"], *expected), (NODE_IPS["w2"], *expected)]
