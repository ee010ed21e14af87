"""RenderError: why a sync path could not be rendered, located as precisely as possible.

Every failure of rendering caused by the repository's content — a file, a
document, an object, a kustomization, a decryption — is a `RenderError`
naming the file (relative to the repository root), the line and document
where known, the object, what is wrong and what to do. Rendering raises
nothing else for bad input: other libraries' errors are translated where
they enter. Messages never quote decrypted content.
"""

from __future__ import annotations

from fleetd.errors import FleetdError


class RenderError(FleetdError):
    """A sync path could not be rendered; located as precisely as possible."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        document: int | None = None,
        item: int | None = None,
        line: int | None = None,
        object_ref: str | None = None,
        temporary: bool = False,
    ) -> None:
        self.message = message
        """What is wrong and what to do."""
        self.file = file
        """File (or sync directory) relative to the repository root."""
        self.document = document
        """1-based document of `file` (of the build output for kustomize)."""
        self.item = item
        """1-based item of a v1 List document."""
        self.line = line
        """1-based line in `file`, when known."""
        self.object_ref = object_ref
        """The object, e.g. ``apps/v1/Deployment demo/web``."""
        self.temporary = temporary
        """True when the same revision may render later (timeouts); such errors are not cached."""
        super().__init__(self._describe())

    def _describe(self) -> str:
        details = [f"document {self.document}"] if self.document is not None else []
        details += [f"item {self.item}"] if self.item is not None else []
        if self.object_ref:  # "apps/v1/Deployment demo/web" reads as "Deployment demo/web"
            type_part, _, name = self.object_ref.partition(" ")
            details.append(f"{type_part.rsplit('/', 1)[-1]} {name}".strip())
        file = f"{self.file}:{self.line}" if self.file and self.line is not None else self.file
        where = " ".join(filter(None, [file, f"({', '.join(details)})" if details else ""]))
        return f"{where}: {self.message}" if where else self.message


class KustomizeError(FleetdError):
    """``kustomize build`` of one directory failed or was refused; rendering turns it into a RenderError."""

    def __init__(self, directory: str | None, detail: str, *, temporary: bool = False) -> None:
        self.directory = directory
        """The kustomization directory (or file) relative to the repository root; None if not about one."""
        self.detail = detail
        """What went wrong and what to do, without the directory."""
        self.temporary = temporary
        """True when retrying the same revision may succeed (timeout, missing binary)."""
        super().__init__(f"{directory}: {detail}" if directory else detail)
