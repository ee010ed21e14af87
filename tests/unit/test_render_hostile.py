"""The worst form of every input to rendering is one clear RenderError, never anything else.

Each case puts one hostile thing into a sync path of a real directory tree
(files, links, FIFOs and sockets made by the test) and renders it. The
answer must be a `RenderError` naming the file (and document and line where
the file can tell them), saying what is wrong and what to do — and another
sync path of the same repository still renders.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from fleetd.render import RenderError, render
from fleetd.render import files as render_files
from testbed.build import toolset

pytestmark = pytest.mark.timeout(20)

REVISION = "0123456789abcdef0123456789abcdef01234567"
OK = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n"
BOMB = textwrap.dedent(
    """\
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: lol}
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """
)


def text(body: str) -> Callable[[Path], object]:
    """Writes `body` to app/bad.yaml."""
    return lambda app: (app / "bad.yaml").write_text(OK + "---\n" + body)


def raw(name: str, data: bytes) -> Callable[[Path], object]:
    return lambda app: (app / name).write_bytes(data)


def symlink(name: str, target: str) -> Callable[[Path], object]:
    return lambda app: (app / name).symlink_to(target)


def fifo(app: Path) -> None:
    os.mkfifo(app / "pipe.yaml")


def unix_socket(app: Path) -> None:
    """A socket file: open() fails on it even for root, so it stands for an unreadable file."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(app / "socket.yaml"))
    server.close()


def sparse(name: str, size: int) -> Callable[[Path], object]:
    def make(app: Path) -> None:
        with open(app / name, "wb") as out:
            out.truncate(size)

    return make


def deep_json(app: Path) -> None:
    (app / "deep.json").write_text("[" * 5000 + "]" * 5000)


def link_cycle(app: Path) -> None:
    (app / "a.yaml").symlink_to("b.yaml")
    (app / "b.yaml").symlink_to("a.yaml")


def kustomization_loop(app: Path) -> None:
    (app / "kustomization.yaml").write_text("resources: [loop]\n")
    (app / "loop").symlink_to("loop")


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], object]
    file: str
    message: str
    document: int | None = None
    line: int | None = None


CASES = {
    # metadata of the wrong type, and other malformed objects
    "name is a list": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [a, b]\n"),
        "app/bad.yaml",
        "metadata.name must be a string, not a list",
        2,
        8,
    ),
    "labels is a string": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: team=a\n"),
        "app/bad.yaml",
        "metadata.labels must be a mapping of strings, not a string",
        2,
        9,
    ),
    "an annotation value is a number": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations:\n    replicas: 3\n"),
        "app/bad.yaml",
        "metadata.annotations.replicas must be a string, not a number — quote it",
        2,
        10,
    ),
    "a label value is a boolean": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {enabled: true}\n"),
        "app/bad.yaml",
        "metadata.labels.enabled must be a string, not a boolean",
        2,
        9,
    ),
    "namespace is a number": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: 42\n"),
        "app/bad.yaml",
        "metadata.namespace must be a string, not a number",
        2,
        9,
    ),
    "apiVersion is missing": Case(
        text("kind: ConfigMap\nmetadata: {name: x}\n"), "app/bad.yaml", "missing apiVersion", 2, 5
    ),
    "apiVersion is a number": Case(
        text("apiVersion: 1\nkind: ConfigMap\nmetadata: {name: x}\n"),
        "app/bad.yaml",
        "apiVersion must be a string (like v1 or apps/v1), not a number",
        2,
        5,
    ),
    "apiVersion is not group/version": Case(
        text("apiVersion: apps/v1/x\nkind: Deployment\nmetadata: {name: x}\n"),
        "app/bad.yaml",
        "apiVersion must be 'version' or 'group/version'",
        2,
        5,
    ),
    "kind is a mapping": Case(
        text("apiVersion: v1\nkind: {a: b}\nmetadata: {name: x}\n"),
        "app/bad.yaml",
        "kind must be a string (like ConfigMap), not a mapping",
        2,
        6,
    ),
    "metadata is a list": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: [x]\n"),
        "app/bad.yaml",
        "metadata must be a mapping, not a list",
        2,
        7,
    ),
    "a name that leaves its URL path": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ../../secrets/x}\n"),
        "app/bad.yaml",
        "may not be '.' or '..' nor contain '/' or '%'",
        2,
        7,
    ),
    "generateName instead of a name": Case(
        text("apiVersion: v1\nkind: Pod\nmetadata: {generateName: p-}\n"),
        "app/bad.yaml",
        "generateName is not supported",
        2,
        7,
    ),
    "a List whose items are not a list": Case(
        text("apiVersion: v1\nkind: List\nitems: {a: b}\n"), "app/bad.yaml", "needs an 'items' array", 2, 5
    ),
    # YAML and JSON that is hostile as text
    "an alias bomb": Case(
        raw("bomb.yaml", BOMB.encode()), "app/bomb.yaml", "aliases expand to more than", 1, 8
    ),
    "a recursive alias": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &d {a: *d}\n"),
        "app/bad.yaml",
        "a recursive alias",
        2,
        8,
    ),
    "YAML nested 500 deep": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: " + "[" * 500 + "]" * 500 + "\n"),
        "app/bad.yaml",
        "nests deeper than 200 levels",
        2,
        8,
    ),
    "JSON nested 5000 deep": Case(deep_json, "app/deep.json", "nests deeper than", 1),
    "a duplicate key": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nkind: Secret\n"),
        "app/bad.yaml",
        "duplicate key 'kind'",
        2,
        8,
    ),
    "a binary value": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nbinaryData: {a: !!binary aGk=}\n"),
        "app/bad.yaml",
        "!!binary value cannot be carried by JSON",
        2,
        8,
    ),
    "NaN": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {x: .nan}\n"),
        "app/bad.yaml",
        "NaN and infinite numbers cannot be carried by JSON",
        2,
        8,
    ),
    "an unknown tag": Case(
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: !Ref x}\n"),
        "app/bad.yaml",
        "could not determine a constructor for the tag '!Ref'",
        2,
        7,
    ),
    "bytes that are not UTF-8": Case(
        raw("latin1.yaml", OK.encode() + b"---\ndata: {caf\xe9: x}\n"),
        "app/latin1.yaml",
        "not UTF-8 text",
        2,
        5,
    ),
    "a document over the size limit": Case(
        raw("huge.json", b'{"a": "' + b"x" * (9 * 1024 * 1024) + b'"}'),
        "app/huge.json",
        "more than the 8.0 MiB fleetd reads",
        1,
    ),
    "a file over the size limit": Case(
        sparse("big.yaml", 65 * 1024 * 1024), "app/big.yaml", "more than the 64.0 MiB"
    ),
    # the file system
    "a symbolic link loop": Case(symlink("loop.yaml", "loop.yaml"), "app/loop.yaml", "symbolic link loop"),
    "a link cycle of two": Case(
        link_cycle,
        "app/a.yaml",
        "symbolic link loop",
    ),
    "a dangling symbolic link": Case(
        symlink("gone.yaml", "nowhere.yaml"), "app/gone.yaml", "'nowhere.yaml', which does not exist"
    ),
    "a directory linked to itself": Case(symlink("again", "."), "app/again", "symbolic link to a directory"),
    "a FIFO": Case(fifo, "app/pipe.yaml", "is a FIFO (named pipe), not a regular file"),
    "an unreadable file (a socket)": Case(unix_socket, "app/socket.yaml", "cannot open"),
    "a kustomization naming a link loop": Case(
        kustomization_loop, "app/kustomization.yaml", "symbolic link loop"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_each_hostile_input_is_one_render_error_naming_file_document_line_and_the_fix(
    tmp_path: Path, case: Case
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other/fine.yaml").write_text(OK)
    case.make(app)
    with pytest.raises(RenderError) as caught:
        await render(
            tmp_path, REVISION, PurePosixPath("app"), {}, "demo", kustomize=toolset().path("kustomize")
        )
    error = caught.value
    assert (error.file, error.message) == (case.file, error.message)
    assert case.message in error.message
    assert (error.document, error.line) == (case.document, case.line)
    assert str(error).startswith(case.file)
    other = await render(tmp_path, REVISION, PurePosixPath("other"), {}, "demo")
    assert [r.obj["metadata"]["name"] for r in other.objects] == ["fine"]


async def test_a_sync_path_that_is_a_symbolic_link_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app").symlink_to("app")
    with pytest.raises(RenderError, match=r"^sync path app is a symbolic link loop"):
        await render(tmp_path, REVISION, PurePosixPath("app"), {}, None)


async def test_manifests_past_the_sync_budget_are_refused_naming_the_file_that_crosses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render_files, "MAX_SYNC_BYTES", 3000)
    monkeypatch.setattr(render_files, "MAX_FILE_BYTES", 2000)
    (tmp_path / "app").mkdir()
    for name in ("a", "b"):
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"x": "y" * 1500}}
        (tmp_path / f"app/{name}.json").write_text(json.dumps(doc))
    with pytest.raises(
        RenderError, match=r"^app/b.json: is \d+ bytes, which takes the sync path's manifests over"
    ):
        await render(tmp_path, REVISION, PurePosixPath("app"), {}, None)
