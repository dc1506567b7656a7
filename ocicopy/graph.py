"""A resolved run as an explicit graph of work (pure: no I/O; built and tested as data).

Compiled from the copies a run must make, once the HEADs that decide skips are done (:class:`Copy`: a
destination repository and tag, and the source's manifest tree with its blobs). Nodes, each once:

``read``      a source digest, read once per locality group (``group``; one group by default);
``upload``    the first placement of a digest in a destination registry: depends on its read;
``mount``     its placement in every other repository of that registry: depends on the upload;
``manifest``  a manifest PUT into a repository: depends on the placements of its blobs there and on its
              children's PUTs (index children first);
``tag``       the tag PUT, last: depends on the top manifest's PUT.

A node's ``key`` is stable for the same work (``kind:where:what``); :meth:`WorkGraph.key` prefixes the run id,
so identical work within a run is one node and nothing is shared across runs. The graph is what a dry run
predicts (:meth:`WorkGraph.summary`), and what an executor runs in :meth:`WorkGraph.order`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from ocicopy.digest import Digest

__all__ = ["BlobRef", "Copy", "GraphSummary", "ManifestRef", "Node", "WorkGraph", "compile_graph"]

Kind = Literal["read", "upload", "mount", "manifest", "tag"]


@dataclass(frozen=True)
class BlobRef:
    digest: Digest
    size: int
    media_type: str = ""


@dataclass(frozen=True)
class ManifestRef:
    """A manifest to push, with the blobs it names (config, layers) and its children (an index's manifests)."""

    digest: Digest
    size: int
    blobs: tuple[BlobRef, ...] = ()
    children: tuple[ManifestRef, ...] = ()


@dataclass(frozen=True)
class Copy:
    """One (deployment, cluster) to copy: ``top`` from ``source`` (a registry host, or ``oci:DIR``; its
    repository ``source_repository``) to ``registry``/``repository``:``tag``; ``group``: the locality group its
    writes run in."""

    source: str
    registry: str
    repository: str
    tag: str
    top: ManifestRef
    group: str = ""
    source_repository: str = ""


@dataclass(frozen=True)
class Node:
    key: str
    kind: Kind
    deps: tuple[str, ...] = ()
    digest: Digest | None = None
    size: int = 0
    registry: str = ""  # a read: the source
    repository: str = ""
    group: str = ""
    media_type: str = ""  # a read, upload or mount: the blob's


class GraphSummary(BaseModel):
    """What a graph predicts: nodes by kind, bytes read from the sources, bytes written to the mirrors."""

    nodes: dict[str, int] = Field(description="nodes by kind (read, upload, mount, manifest, tag)")
    bytes_from_source: int = Field(description="each source digest once per locality group")
    bytes_to_mirrors: int = Field(description="each upload once per destination registry")
    uploads_by_registry: dict[str, int] = Field(default_factory=dict)


@dataclass
class WorkGraph:
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, node: Node) -> str:
        """Add ``node`` unless the same work is there already (same key); its key."""
        self.nodes.setdefault(node.key, node)
        return node.key

    def key(self, run_id: str, node: str) -> str:
        """The node's key in one run (e.g. a Dask key): the run id, then the node's own key."""
        return f"{run_id}/{node}"

    def order(self) -> list[Node]:
        """Every node after all it depends on (a ``ValueError`` for a cycle: never, by construction)."""
        done: set[str] = set()
        out: list[Node] = []
        visiting: set[str] = set()

        def visit(key: str) -> None:
            if key in done:
                return
            if key in visiting:
                raise ValueError(f"cycle through {key}")
            visiting.add(key)
            for dep in self.nodes[key].deps:
                visit(dep)
            visiting.discard(key)
            done.add(key)
            out.append(self.nodes[key])

        for key in self.nodes:
            visit(key)
        return out

    def of_kind(self, kind: Kind) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]

    def summary(self) -> GraphSummary:
        kinds: dict[str, int] = {k: 0 for k in ("read", "upload", "mount", "manifest", "tag")}
        uploads: dict[str, int] = {}
        for n in self.nodes.values():
            kinds[n.kind] += 1
            if n.kind == "upload":
                uploads[n.registry] = uploads.get(n.registry, 0) + 1
        return GraphSummary(
            nodes=kinds,
            bytes_from_source=sum(n.size for n in self.of_kind("read")),
            bytes_to_mirrors=sum(n.size for n in self.of_kind("upload")),
            uploads_by_registry=uploads,
        )


def compile_graph(copies: Iterable[Copy], present: Sequence[tuple[str, str, Digest]] = ()) -> WorkGraph:
    """The graph of ``copies``; ``present``: ``(registry, repository, digest)`` blobs the destinations hold
    already (no placement: a manifest there needs nothing for them)."""
    graph = WorkGraph()
    held = set(present)
    uploaded: dict[tuple[str, Digest], str] = {}  # (registry, digest) → its upload node

    def place(c: Copy, blob: BlobRef) -> str | None:
        if (c.registry, c.repository, blob.digest) in held:
            return None
        first = uploaded.get((c.registry, blob.digest))
        if first is None:
            read = graph.add(Node(f"read:{c.group}:{c.source}:{blob.digest}", "read", (), blob.digest, blob.size,
                                  c.source, c.source_repository, c.group, blob.media_type))  # fmt: skip
            first = uploaded[(c.registry, blob.digest)] = graph.add(
                Node(
                    f"upload:{c.registry}/{c.repository}:{blob.digest}",
                    "upload",
                    (read,),
                    blob.digest,
                    blob.size,
                    c.registry,
                    c.repository,
                    c.group,
                    blob.media_type,
                )
            )
            return first
        if graph.nodes[first].repository == c.repository:
            return first
        return graph.add(
            Node(
                f"mount:{c.registry}/{c.repository}:{blob.digest}",
                "mount",
                (first,),
                blob.digest,
                blob.size,
                c.registry,
                c.repository,
                c.group,
                blob.media_type,
            )
        )

    def push(c: Copy, m: ManifestRef) -> str:
        deps = [d for b in m.blobs if (d := place(c, b)) is not None]
        deps += [push(c, child) for child in m.children]
        return graph.add(
            Node(
                f"manifest:{c.registry}/{c.repository}:{m.digest}",
                "manifest",
                tuple(dict.fromkeys(deps)),
                m.digest,
                m.size,
                c.registry,
                c.repository,
                c.group,
            )
        )

    for c in copies:
        top = push(c, c.top)
        graph.add(Node(f"tag:{c.registry}/{c.repository}:{c.tag}", "tag", (top,), c.top.digest, 0, c.registry,
                       c.repository, c.group))  # fmt: skip
    return graph
