"""What one function or class contributes to a fingerprint, before parts are named."""

from __future__ import annotations

# A part before it is named: (kind, defining file or None, qualified name). `render` turns it
# into `kind:name` or `kind:<module>.name`.
Key = tuple[str, "str | None", str]


class Info:
    """The parts of one function or class, and the project objects (children) it uses."""

    __slots__ = ("children", "parts")

    def __init__(self) -> None:
        self.parts: list[tuple[Key, str]] = []
        self.children: list[object] = []

    def extend(self, other: Info) -> None:
        self.parts.extend(other.parts)
        self.children.extend(other.children)
