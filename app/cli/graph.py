"""``quarry modules --graph``: the module graph as a Mermaid flowchart, drawn from the specs."""

from __future__ import annotations

from collections.abc import Sequence

from app.kernel.module import ModuleSpec

__all__ = ["module_graph"]


def module_graph(specs: Sequence[ModuleSpec]) -> str:
    """A Mermaid ``flowchart`` of ``specs``, in their order, one statement per line.

    One node per module (its name and the Protocol it provides); ``A --> B``: A requires B's
    contract; ``A -.-> B``: A uses it when it is bound; ``A ==>|Event| B``: A publishes an event B
    subscribes to.
    """
    lines = ["flowchart TD"]
    lines += [f'    {s.name}["{s.name}<br/>{s.provides.__name__}"]' for s in specs]
    for spec in specs:
        for dep in spec.requires:
            arrow = "-.->" if dep.optional else "-->"
            lines.append(f"    {spec.name} {arrow} {dep.module}")
    for publisher in specs:
        for event in publisher.publishes:
            for subscriber in specs:
                if event in subscriber.subscribes:
                    lines.append(f"    {publisher.name} ==>|{event.__name__}| {subscriber.name}")
    return "\n".join(lines) + "\n"
