"""YAML and JSON documents through fleetd's one door for PyYAML: bounded, located, JSON-only."""

from __future__ import annotations

import pytest
import yaml

from fleetd.util import yamldoc
from fleetd.util.yamldoc import DocumentError, Limits

pytestmark = pytest.mark.timeout(10)


def values(data: bytes) -> list[object]:
    return [doc.value for doc in yamldoc.load_manifests(data)]


def refusal(data: bytes, limits: Limits = yamldoc.DEFAULT_LIMITS) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        list(yamldoc.load_manifests(data, limits=limits))
    return caught.value


class TestBounds:
    def test_an_alias_bomb_is_refused_on_the_graph_without_expanding_it(self) -> None:
        lines = ["a: &a [" + ",".join(["lol"] * 9) + "]"]
        lines += [
            f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ]
        error = refusal("\n".join(lines).encode())
        assert error.bound
        assert "aliases expand to more than 100000 nodes (an alias bomb?)" in error.problem

    def test_a_recursive_alias_is_refused(self) -> None:
        assert "a recursive alias" in refusal(b"x: &x [1, *x]\n").problem

    def test_nesting_is_bounded_in_yaml_and_json(self) -> None:
        limits = Limits(max_depth=10)
        assert refusal(b"a: " + b"[" * 11 + b"]" * 11, limits).problem.startswith("nests deeper than 10")
        with pytest.raises(DocumentError, match="nests deeper than 10"):
            yamldoc.load_json(b"[" * 11 + b"]" * 11, limits=limits)
        assert values(b"a: " + b"[" * 8 + b"]" * 8) == [{"a": [[[[[[[[]]]]]]]]}]

    def test_the_node_count_after_expansion_is_bounded(self) -> None:
        limits = Limits(max_nodes=50, max_alias_nodes=10_000)
        doc = b"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [*a, *a, *a, *a, *a, *a]\n"
        assert refusal(doc, limits).problem.startswith("has more than 50 nodes")

    def test_a_document_too_large_is_refused_before_it_is_parsed(self) -> None:
        limits = Limits(max_document_bytes=100)
        error = refusal(b"a: 1\n---\nb: '" + b"x" * 200 + b"'\n", limits)
        assert (error.document, error.line, error.bound) == (2, 2, True)
        assert error.problem.startswith("the document is 210 bytes, more than the 100 bytes")

    def test_aliased_collections_come_back_as_independent_copies(self) -> None:
        (doc,) = values(b"base: &b {x: [1]}\none: *b\ntwo: {<<: *b, y: 2}\n")
        assert isinstance(doc, dict)
        doc["one"]["x"].append(2)
        assert doc["base"] == {"x": [1]}
        assert doc["two"] == {"x": [1], "y": 2}


class TestKubernetesFlavour:
    def test_dates_stay_strings_and_yaml_1_1_booleans_are_booleans(self) -> None:
        assert values(b"since: 2024-05-01\non: yes\n") == [{"since": "2024-05-01", "true": True}]

    def test_keys_become_strings_as_json_writes_them(self) -> None:
        assert values(b"1: a\ntrue: b\nnull: c\n1.5: d\n") == [
            {"1": "a", "true": "b", "null": "c", "1.5": "d"}
        ]

    @pytest.mark.parametrize(
        ("text", "problem", "line"),
        [
            (b"a: 1\na: 2\n", "duplicate key 'a'", 4),
            (b"yes: 1\ntrue: 2\n", "duplicate key 'true' (two keys that JSON writes alike)", 4),
            (b"? [a]\n: 1\n", "a mapping key must be a string, not a list", 3),
            (b"a: !!binary aGk=\n", "a !!binary value cannot be carried by JSON", 3),
            (b"a: !!set {x}\n", "a !!set cannot be carried by JSON", 3),
            (b"a: !!omap [x: 1]\n", "an !!omap cannot be carried by JSON", 3),
            (b"a: !!timestamp 2024-01-01\n", "a !!timestamp value cannot be carried by JSON", 3),
            (b"a: -.inf\n", "NaN and infinite numbers cannot be carried by JSON", 3),
        ],
    )
    def test_what_json_cannot_carry_is_an_error_at_its_line(
        self, text: bytes, problem: str, line: int
    ) -> None:
        error = refusal(b"ok: 1\n---\n" + text)
        assert problem in error.problem
        assert (error.document, error.line) == (2, line)

    def test_bytes_that_are_not_utf8_name_their_line(self) -> None:
        error = refusal(b"a: 1\n---\nb: caf\xe9\n")
        assert (error.problem, error.line) == (
            "not UTF-8 text (byte 16 cannot be decoded); save the file as UTF-8",
            3,
        )

    def test_the_json_flavour_refuses_duplicates_and_nan(self) -> None:
        with pytest.raises(DocumentError, match="duplicate key 'a'"):
            yamldoc.load_json(b'{"a": 1, "a": 2}')
        with pytest.raises(DocumentError, match="NaN cannot be carried by JSON"):
            yamldoc.load_json(b"[NaN]")


STREAMS = [
    b"a: |\n  text\n---\nb: 1\n",
    b"--- >\n folded\n---\n",
    b"a: 1\n...\n---\nb: 2\n",
    b"# only a comment\n---\n---\n",
    b"a: |\n---\n",
    b"a: 1\r\n---\r\nb: 2\r\n",
    b"%YAML 1.1\n---\na: 1\n---\nb: 2\n",
    b"a: 1\n---\tb: 2\n",
    b"x: ---y\n---x: 1\n",
    b"a: 1\n--- {b: 2}\n--- [c]\n",
]


class TestStreams:
    @pytest.mark.parametrize("stream", STREAMS)
    def test_cutting_a_stream_at_its_document_markers_changes_nothing(self, stream: bytes) -> None:
        try:
            expected: object = list(yaml.safe_load_all(stream))
        except yaml.YAMLError:
            expected = DocumentError
        try:
            got: object = yamldoc.load_plain(stream)
        except DocumentError:
            got = DocumentError
        assert got == expected

    def test_documents_know_their_index_and_first_line(self) -> None:
        docs = list(yamldoc.load_manifests(b"# c\na: 1\n---\n---\n\nb: 2\n"))
        assert [(doc.index, doc.line) for doc in docs] == [(1, 2), (2, 4), (3, 6)]

    def test_locate_finds_the_line_of_a_path_or_of_its_deepest_part(self) -> None:
        data = b"a: 1\n---\nx:\n  y:\n    - 1\n    - z: 3\n"
        assert yamldoc.locate(data, 2, ["x", "y", 1, "z"]) == 6
        assert yamldoc.locate(data, 2, ["x", "missing"]) == 4
        assert yamldoc.locate(data, 3, ["x"]) is None

    def test_compose_marks_untagged_plain_scalars_for_the_caller(self) -> None:
        (node,) = yamldoc.compose_all(b"a: yes\nb: 'yes'\n", untagged_plain=True)
        assert isinstance(node, yamldoc.MappingNode)
        assert [value.tag for _, value in node.value] == [yamldoc.PLAIN_TAG, "tag:yaml.org,2002:str"]


class TestWriting:
    def test_dump_sorts_keys_and_writes_multi_line_strings_as_blocks(self) -> None:
        assert yamldoc.dump({"b": "one\ntwo\n", "a": 1}) == "a: 1\nb: |\n  one\n  two\n"

    def test_dump_all_keeps_order_and_unicode_and_separates_documents(self) -> None:
        assert yamldoc.dump_all([{"z": "é"}]) == "z: é\n"
        assert yamldoc.dump_all([{"a": 1}, {"b": 2}]) == "---\na: 1\n---\nb: 2\n"
