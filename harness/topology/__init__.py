"""A local Ray topology of network namespaces: `harness cluster up FILE`, `status`, `exec`, `restart`, `limit`,
`down` (docs/topology.md). Nothing here imports Ray; nodes are `ray start` processes."""

from harness.topology.cluster import UpFailed, describe, down, exec_in, resolve, restart, set_cpus, up, up_state
from harness.topology.spec import Link, Topology, load_topology
from harness.topology.state import NodeState, TopologyState, load_state

__all__ = ["Link", "NodeState", "Topology", "TopologyState", "UpFailed", "describe", "down", "exec_in", "load_state", "load_topology", "resolve", "restart", "set_cpus", "up", "up_state"]
