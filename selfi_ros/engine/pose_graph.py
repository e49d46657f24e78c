"""Pose graph of window Sim(3)s (map <- window), optimised with GTSAM's Levenberg-Marquardt.

Nodes: one per window, its ``T_map_window`` (:class:`~selfi_ros.geometry.sim3.Sim3`, ``x -> s R x + t``).
Edges: relative Sim(3)s ``T_i_j = T_map_i^-1 ∘ T_map_j`` (maps window-j coordinates into window i):
``chain`` edges between consecutive windows (measured by chaining at creation) and ``loop`` edges (measured
by a verified loop closure). Priors: the first window of the map is held (practically fixed); the first
window of a later map segment gets a weak prior, so that it stays where it was guessed until a loop edge
joins it to the rest. Optimising spreads the loop's discrepancy over the chain (pose-graph optimisation on
Sim(3) for monocular SLAM: H. Strasdat, J. M. M. Montiel, A. J. Davison, "Scale drift-aware large scale
monocular SLAM", RSS 2010).

GTSAM (``gtsam`` on PyPI, borglab/gtsam: ``gtsam/slam/BetweenFactor.h``, ``gtsam/geometry/Similarity3.h``)
stores a similarity as ``(R, t_g, s)`` acting as ``p -> s (R p + t_g)``; here ``t_g = t / s``
(:func:`to_gtsam` / :func:`from_gtsam`). Its tangent vector is ``[rotation (3), translation (3), log scale]``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from selfi_ros.geometry.sim3 import Sim3

log = logging.getLogger("selfi_ros.engine")


def to_gtsam(S: Sim3):
    """Our :class:`Sim3` -> ``gtsam.Similarity3`` (same map ``x -> s R x + t``)."""
    import gtsam

    return gtsam.Similarity3(gtsam.Rot3(np.asarray(S.R, np.float64)), np.asarray(S.t, np.float64) / S.s, float(S.s))


def from_gtsam(G) -> Sim3:
    """``gtsam.Similarity3`` -> our :class:`Sim3`."""
    s = float(G.scale())
    return Sim3(s, np.asarray(G.rotation().matrix(), np.float64), s * np.asarray(G.translation(), np.float64))


def sim3_to_list(S: Sim3) -> list:
    """``[s, R (9, row-major), t (3)]`` for JSON."""
    return [float(S.s)] + [float(x) for x in np.asarray(S.R).reshape(-1)] + [float(x) for x in S.t]


def sim3_from_list(v) -> Sim3:
    """Inverse of :func:`sim3_to_list`. Raises ValueError on a malformed list."""
    v = [float(x) for x in v]
    if len(v) != 13:
        raise ValueError(f"a Sim(3) needs 13 numbers, got {len(v)}")
    return Sim3(v[0], np.array(v[1:10]).reshape(3, 3), np.array(v[10:13]))


@dataclass
class Edge:
    """A relative Sim(3) measurement ``T_i_j`` (window j -> window i) of kind ``chain`` or ``loop``, with
    optional own standard deviations ``(rotation rad, translation in window-i units, log scale)`` (None:
    the graph's)."""

    i: int
    j: int
    T_i_j: Sim3
    kind: str = "chain"
    sigmas: Optional[tuple] = None


class PoseGraph:
    """Window Sim(3) nodes, relative edges, priors (see module docstring).

    Args:
        sigma_rotation: std of an edge's rotation error (rad).
        sigma_translation: std of an edge's translation error (units of the edge's first window).
        sigma_scale: std of an edge's log-scale error (unitless).
        weak_prior_sigma: std of the weak prior of a segment's first window (all components).
    """

    def __init__(self, sigma_rotation: float = 0.01, sigma_translation: float = 0.01, sigma_scale: float = 0.01,
                 weak_prior_sigma: float = 1e3) -> None:
        self.sigmas = (float(sigma_rotation), float(sigma_translation), float(sigma_scale))
        self.weak_prior_sigma = float(weak_prior_sigma)
        self.clear()

    def clear(self) -> None:
        """No nodes, edges or priors."""
        self.nodes: dict[int, Sim3] = {}
        self.edges: list[Edge] = []
        self.priors: dict[int, str] = {}  # node -> "fixed" | "weak"

    def __len__(self) -> int:
        return len(self.nodes)

    def add_node(self, node: int, S: Sim3, prior: Optional[str] = None) -> None:
        """Add (or replace) node ``node`` with ``T_map_window = S``; ``prior`` "fixed", "weak" or None."""
        if prior not in (None, "fixed", "weak"):
            raise ValueError(f"prior must be None, 'fixed' or 'weak', got {prior!r}")
        self.nodes[int(node)] = S
        if prior is not None:
            self.priors[int(node)] = prior

    def remove_node(self, node: int) -> None:
        """Drop a node with its edges and prior (e.g. a window evicted from the database)."""
        self.nodes.pop(int(node), None)
        self.priors.pop(int(node), None)
        self.edges = [e for e in self.edges if e.i != node and e.j != node]

    def add_edge(self, i: int, j: int, T_i_j: Sim3, kind: str = "chain", sigmas: Optional[tuple] = None) -> None:
        """Add a measurement ``T_i_j`` between existing nodes (``sigmas``: see :class:`Edge`; each at least
        the graph's). Raises KeyError for an unknown node."""
        if int(i) not in self.nodes or int(j) not in self.nodes:
            raise KeyError(f"edge {i}-{j}: unknown node")
        if sigmas is not None:
            sigmas = tuple(max(float(a), b) for a, b in zip(sigmas, self.sigmas))
        self.edges.append(Edge(int(i), int(j), T_i_j, kind, sigmas))

    def neighbours_within(self, node: int, hops: int) -> set:
        """Nodes reachable from ``node`` over at most ``hops`` edges (``node`` included)."""
        adj: dict[int, set] = {}
        for e in self.edges:
            adj.setdefault(e.i, set()).add(e.j)
            adj.setdefault(e.j, set()).add(e.i)
        seen, front = {int(node)}, {int(node)}
        for _ in range(max(0, int(hops))):
            front = {n for f in front for n in adj.get(f, ())} - seen
            seen |= front
        return seen

    def components(self) -> dict[int, int]:
        """node -> id of its connected component (the smallest node id in it)."""
        parent = {n: n for n in self.nodes}

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for e in self.edges:
            a, b = find(e.i), find(e.j)
            if a != b:
                parent[max(a, b)] = min(a, b)
        return {n: find(n) for n in self.nodes}

    def optimize(self, iterations: int = 100) -> dict[int, Sim3]:
        """Levenberg-Marquardt over all nodes from their current values; the nodes are updated and
        returned (node -> Sim3). With no edges nothing changes. A node of a component without prior is
        held by a weak prior. Raises RuntimeError when GTSAM fails (the nodes are left unchanged)."""
        import gtsam

        if not self.edges:
            return dict(self.nodes)
        r, t, s = self.sigmas
        edge_noise = gtsam.noiseModel.Diagonal.Sigmas(np.array([r, r, r, t, t, t, s], np.float64))
        fixed = gtsam.noiseModel.Isotropic.Sigma(7, 1e-6)
        weak = gtsam.noiseModel.Isotropic.Sigma(7, self.weak_prior_sigma)
        graph = gtsam.NonlinearFactorGraph()
        values = gtsam.Values()
        for n, S in self.nodes.items():
            values.insert(n, to_gtsam(S))
        comp = self.components()
        held = {comp[n] for n, p in self.priors.items() if n in comp and p == "fixed"}
        for n, p in self.priors.items():
            if n in self.nodes:
                graph.add(gtsam.PriorFactorSimilarity3(n, to_gtsam(self.nodes[n]), fixed if p == "fixed" else weak))
        for root in set(comp.values()) - held - {comp[n] for n in self.priors if n in comp}:
            graph.add(gtsam.PriorFactorSimilarity3(root, to_gtsam(self.nodes[root]), weak))
        for e in self.edges:
            noise = edge_noise
            if e.sigmas is not None:
                er, et, es = e.sigmas
                noise = gtsam.noiseModel.Diagonal.Sigmas(np.array([er, er, er, et, et, et, es], np.float64))
            graph.add(gtsam.BetweenFactorSimilarity3(e.i, e.j, to_gtsam(e.T_i_j), noise))
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(int(iterations))
        try:
            err0 = graph.error(values)
            result = gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize()
            err1 = graph.error(result)
        except RuntimeError as e:
            raise RuntimeError(f"pose graph optimisation failed: {e}") from e
        out = {n: from_gtsam(result.atSimilarity3(n)) for n in self.nodes}
        log.info("pose graph: %d windows, %d edges, error %.4g -> %.4g", len(self.nodes), len(self.edges), err0, err1)
        self.nodes = out
        return dict(out)

    def to_json(self) -> dict:
        """JSON-able dict of nodes, edges and priors (:meth:`from_json` reads it)."""
        return {"nodes": {str(n): sim3_to_list(S) for n, S in self.nodes.items()},
                "edges": [[e.i, e.j, e.kind, sim3_to_list(e.T_i_j), None if e.sigmas is None else list(e.sigmas)]
                          for e in self.edges],
                "priors": {str(n): p for n, p in self.priors.items()}}

    def load_json(self, d: dict) -> None:
        """Replace the graph by one from :meth:`to_json`. Raises ValueError / KeyError / TypeError on a
        malformed dict."""
        nodes = {int(n): sim3_from_list(v) for n, v in d["nodes"].items()}
        edges = [Edge(int(e[0]), int(e[1]), sim3_from_list(e[3]), str(e[2]),
                      None if len(e) < 5 or e[4] is None else tuple(float(x) for x in e[4])) for e in d["edges"]]
        priors = {int(n): str(p) for n, p in d["priors"].items()}
        for e in edges:
            if e.i not in nodes or e.j not in nodes:
                raise ValueError(f"edge {e.i}-{e.j} names an unknown window")
        self.nodes, self.edges, self.priors = nodes, edges, priors
