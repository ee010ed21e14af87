"""A real git repository for tests, written with pygit2 (no git binary, no fakes)."""

from __future__ import annotations

from pathlib import Path

import pygit2


class WorkRepo:
    """A non-bare repository whose files tests write, remove and commit."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        self.repo = pygit2.init_repository(str(path), initial_head=branch)
        self.signature = pygit2.Signature("fleetd tests", "tests@fleetd.invalid")

    def write(self, files: dict[str, str]) -> WorkRepo:
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return self

    def remove(self, *names: str) -> WorkRepo:
        for name in names:
            (self.path / name).unlink()
            self.repo.index.remove(name)
        return self

    def commit(self, message: str) -> str:
        index = self.repo.index
        index.add_all()
        index.write()
        tree = index.write_tree()
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        oid = self.repo.create_commit("HEAD", self.signature, self.signature, message, tree, parents)
        return str(oid)

    def head(self) -> str:
        """The commit the branch points at."""
        return str(self.repo.head.target)
