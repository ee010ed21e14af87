"""Sharding's pure parts: ``[fleet.sharding]``, rendezvous assignment and pins, Lease parsing,
liveness judged by the replica's own clock, and the status section."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from fleetd.api.v1 import overview
from fleetd.daemon.status import status_document
from fleetd.errors import InventoryError
from fleetd.inventory import Cluster, load_fleet
from fleetd.inventory.sharding import default_identity
from fleetd.shard.assign import assign, owner, pins
from fleetd.shard.leases import Lease, lease_name, new_holder, replica_of
from fleetd.shard.view import LeaseView
from tests.fleetstate import fleet_state

pytestmark = pytest.mark.timeout(30)
OPENAPI = yaml.safe_load((Path(__file__).parents[2] / "fleetd/api/openapi.yaml").read_text())

FLEET = '[fleet]\nname = "f"\n\n[source]\nurl = "https://example.com/fleet.git"\n'


def load_sharding(tmp_path: Path, table: str) -> object:
    (tmp_path / "fleetd.toml").write_text(FLEET + "\n[fleet.sharding]\n" + table)
    (tmp_path / "a.toml").write_text('[cluster]\nkubeconfig = "a.yaml"\n')
    return load_fleet(tmp_path / "fleetd.toml").sharding


def problems(tmp_path: Path, table: str) -> list[str]:
    with pytest.raises(InventoryError) as info:
        load_sharding(tmp_path, table)
    return [f"{p.key}: {p.message}" for p in info.value.problems]


# -- [fleet.sharding] ------------------------------------------------------------------


class TestShardingConfig:
    def test_only_the_management_kubeconfig_is_required_and_the_identity_defaults_to_the_host_name(
        self, tmp_path: Path
    ) -> None:
        sharding = load_sharding(tmp_path, 'kubeconfig = "mgmt.yaml"\n')
        assert sharding is not None
        assert vars_of(sharding) == {
            "kubeconfig": tmp_path / "mgmt.yaml",
            "identity": default_identity(),
            "context": None,
            "namespace": "fleetd",
            "lease_duration": 15.0,
            "renew_period": 5.0,
            "pin_label": "fleetd.dev/replicas",
        }
        assert default_identity() == socket.gethostname().split(".")[0].lower()

    def test_a_fleet_without_the_section_is_not_sharded(self, tmp_path: Path) -> None:
        (tmp_path / "fleetd.toml").write_text(FLEET)
        assert load_fleet(tmp_path / "fleetd.toml").sharding is None

    def test_every_key_is_read(self, tmp_path: Path) -> None:
        sharding = load_sharding(
            tmp_path,
            'kubeconfig = "m.yaml"\ncontext = "hub"\nnamespace = "leases"\nidentity = "hub-1"\n'
            'lease_duration = "30s"\nrenew_period = "2s"\npin_label = "example.com/hubs"\n',
        )
        assert vars_of(sharding) == {
            "kubeconfig": tmp_path / "m.yaml",
            "identity": "hub-1",
            "context": "hub",
            "namespace": "leases",
            "lease_duration": 30.0,
            "renew_period": 2.0,
            "pin_label": "example.com/hubs",
        }

    def test_a_short_lease_renews_a_third_of_it_by_default(self, tmp_path: Path) -> None:
        sharding = load_sharding(tmp_path, 'kubeconfig = "m.yaml"\nlease_duration = "6s"\n')
        assert vars_of(sharding)["renew_period"] == 2.0

    @pytest.mark.parametrize(
        ("table", "expected"),
        [
            ('namespace = "x"\n', "fleet.sharding: missing required key 'kubeconfig'"),
            ('kubeconfig = "m"\nidentity = "Hub_1"\n', "fleet.sharding.identity: 'Hub_1' is not a valid"),
            ('kubeconfig = "m"\nlease_duration = "1.5s"\n', "fleet.sharding.lease_duration: a Lease lasts"),
            ('kubeconfig = "m"\nlease_duration = "48h"\n', "fleet.sharding.lease_duration: a Lease lasts"),
            ('kubeconfig = "m"\nrenew_period = "10s"\n', "fleet.sharding.renew_period: renew at least"),
            ('kubeconfig = "m"\npin_label = "a b"\n', "fleet.sharding.pin_label: 'a b' is not a valid"),
            ('kubeconfig = "m"\nnamespace = "No"\n', "fleet.sharding.namespace: 'No' is not a valid"),
            ('kubeconfig = "m"\nlease = "15s"\n', "fleet.sharding.lease: unknown key 'lease'"),
        ],
    )
    def test_a_wrong_value_is_one_problem_naming_the_key_and_the_fix(
        self, tmp_path: Path, table: str, expected: str
    ) -> None:
        found = problems(tmp_path, table)
        assert len(found) == 1, found
        assert found[0].startswith(expected), found


def vars_of(sharding: object) -> dict[str, object]:
    return {k: getattr(sharding, k) for k in sharding.__dataclass_fields__}  # type: ignore[attr-defined]


# -- rendezvous and pins ------------------------------------------------------------------


CLUSTERS = {f"cluster-{i}": None for i in range(2000)}


def test_every_replica_gets_about_an_equal_share() -> None:
    shares = Counter(assign(CLUSTERS, ["hub-a", "hub-b", "hub-c", "hub-d"]).values())
    assert set(shares) == {"hub-a", "hub-b", "hub-c", "hub-d"}
    assert all(abs(n - 500) < 75 for n in shares.values()), shares


def test_a_joining_replica_takes_about_a_quarter_and_nothing_else_moves() -> None:
    before = assign(CLUSTERS, ["hub-a", "hub-b", "hub-c"])
    after = assign(CLUSTERS, ["hub-a", "hub-b", "hub-c", "hub-d"])
    moved = {c for c in CLUSTERS if before[c] != after[c]}
    assert all(after[c] == "hub-d" for c in moved)
    assert 0.2 < len(moved) / len(CLUSTERS) < 0.3


def test_a_leaving_replica_gives_away_only_its_own_clusters() -> None:
    before = assign(CLUSTERS, ["hub-a", "hub-b", "hub-c"])
    after = assign(CLUSTERS, ["hub-a", "hub-c"])
    assert {c for c in CLUSTERS if before[c] != after[c]} == {c for c, o in before.items() if o == "hub-b"}


def test_the_assignment_depends_only_on_names_not_on_order() -> None:
    assert assign(CLUSTERS, ["hub-c", "hub-a", "hub-b"]) == assign(CLUSTERS, ["hub-a", "hub-b", "hub-c"])


def cluster(labels: dict[str, str]) -> Cluster:
    return Cluster(name="edge", file=Path("edge.toml"), kubeconfig=Path("k"), labels=MappingProxyType(labels))


def test_a_pin_names_one_or_several_replicas_joined_by_underscores() -> None:
    label = "fleetd.dev/replicas"
    assert pins(cluster({}), label) is None
    assert pins(cluster({label: "hub-eu"}), label) == frozenset({"hub-eu"})
    assert pins(cluster({label: "hub-1_hub-2"}), label) == frozenset({"hub-1", "hub-2"})


def test_a_pinned_cluster_goes_only_to_a_live_pinned_replica_or_to_nobody() -> None:
    live = ["hub-1", "hub-2", "hub-3"]
    assert all(owner(c, live, frozenset({"hub-3"})) == "hub-3" for c in list(CLUSTERS)[:50])
    assert {owner(c, live, frozenset({"hub-1", "hub-2"})) for c in list(CLUSTERS)[:50]} == {"hub-1", "hub-2"}
    assert owner("edge", live, frozenset({"hub-9"})) is None
    assert owner("edge", [], None) is None


# -- Leases ----------------------------------------------------------------------------------


def lease_object(name: str, holder: str = "hub-a_1", version: str = "7") -> dict[str, object]:
    return {
        "metadata": {"name": name, "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 2},
    }


def test_a_lease_of_the_fleet_parses_and_round_trips() -> None:
    lease = Lease.parse("f", lease_object("f.cluster.edge-1"))
    assert lease is not None
    assert (lease.kind, lease.subject, lease.holder, lease.replica, lease.version) == (
        "cluster", "edge-1", "hub-a_1", "hub-a", "7",
    )  # fmt: skip
    assert Lease.parse("f", lease.to_object("f", "ns")) == lease


@pytest.mark.parametrize(
    "obj",
    [
        lease_object("other.cluster.edge-1"),
        lease_object("f.member.hub-a"),
        lease_object("f.cluster"),
        {"metadata": {"name": "f.cluster.edge"}, "spec": {}},
        {"metadata": "not a map"},
        ["not", "an", "object"],
        None,
    ],
)
def test_objects_that_are_not_one_of_the_fleets_leases_are_ignored(obj: object) -> None:
    assert Lease.parse("f", obj) is None


def test_a_hostile_spec_reads_as_a_released_lease_not_as_a_crash() -> None:
    spec = {"holderIdentity": ["x"], "leaseDurationSeconds": "15", "leaseTransitions": None}
    obj = {"metadata": {"name": "f.replica.hub", "resourceVersion": "1"}, "spec": spec}
    lease = Lease.parse("f", obj)
    assert lease is not None
    assert (lease.holder, lease.duration, lease.transitions) == ("", 0, 0)


def test_a_holder_names_the_replica_and_a_fresh_incarnation_per_process() -> None:
    first, second = new_holder("hub-a"), new_holder("hub-a")
    assert first != second
    assert replica_of(first) == replica_of(second) == "hub-a"


# -- liveness by the replica's own clock ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(subject: str, holder: str, version: str) -> Lease:
    return Lease(name=lease_name("f", "replica", subject), kind="replica", subject=subject, holder=holder,
                 version=version)  # fmt: skip


def test_a_replica_is_live_until_its_lease_has_not_changed_for_a_whole_duration_of_local_time() -> None:
    clock = Clock()
    view = LeaseView("f", clock=clock)
    view.observe(replica("hub-a", "hub-a_1", "5"))
    clock.now += 14.9
    assert view.live_replicas(15) == {"hub-a"}
    view.observe(replica("hub-a", "hub-a_1", "5"))  # the same version again (a relist): no renewal
    clock.now += 0.2
    assert view.live_replicas(15) == set()
    assert view.holder_gone("hub-a_1", 15)
    view.observe(replica("hub-a", "hub-a_1", "6"))
    assert view.live_replicas(15) == {"hub-a"}
    assert not view.holder_gone("hub-a_1", 15)


def test_an_older_version_seen_after_a_newer_one_changes_nothing() -> None:
    clock = Clock()
    view = LeaseView("f", clock=clock)
    view.observe(replica("hub-a", "hub-a_1", "9"))
    clock.now += 10
    view.observe(replica("hub-a", "hub-a_1", "8"))
    seen = view.seen("replica", "hub-a")
    assert seen.lease is not None
    assert (seen.lease.version, seen.since) == ("9", 1000.0)


def test_a_holder_whose_replica_lease_another_incarnation_holds_is_gone_at_once() -> None:
    view = LeaseView("f", clock=Clock())
    view.observe(replica("hub-a", "hub-a_2", "3"))
    assert view.holder_gone("hub-a_1", 15)
    assert not view.holder_gone("hub-a_2", 15)


def test_a_lease_never_seen_counts_as_absent_since_the_view_started() -> None:
    clock = Clock()
    view = LeaseView("f", clock=clock)
    assert not view.holder_gone("hub-x_1", 15)
    clock.now += 15
    assert view.holder_gone("hub-x_1", 15)


async def test_a_relist_marks_leases_it_no_longer_has_absent_from_that_moment() -> None:
    clock = Clock()
    view = LeaseView("f", clock=clock)
    view.observe(replica("hub-a", "hub-a_1", "1"))
    view.observe(replica("hub-b", "hub-b_1", "1"))
    clock.now += 20
    await view.on_list([replica("hub-a", "hub-a_1", "2").to_object("f", "ns")])
    assert view.seen("replica", "hub-b").lease is None
    assert not view.holder_gone("hub-b_1", 15)  # its absence is new: wait a whole duration again
    clock.now += 15
    assert view.holder_gone("hub-b_1", 15)


# -- status ----------------------------------------------------------------------------------


def test_the_status_document_of_a_replica_names_its_clusters_the_replicas_and_each_clusters_owner(
    tmp_path: Path,
) -> None:
    state = fleet_state(tmp_path, replica="hub-a")
    state.shard_member(True, None)
    state.shard_gained("a", None)
    holders = {"a": "hub-a", "b": "hub-b"}
    state.shard_seen(owned={"a"}, live={"hub-a", "hub-b"}, gone={"hub-c"}, holders=holders, assigned=holders)
    doc = status_document(state, lambda _: None)
    assert doc["sharding"] == {
        "replica": "hub-a",
        "member": True,
        "error": None,
        "owned": ["a"],
        "replicas": [
            {"name": "hub-a", "live": True, "clusters": ["a"]},
            {"name": "hub-b", "live": True, "clusters": ["b"]},
            {"name": "hub-c", "live": False, "clusters": []},
        ],
        "clusters": {
            "a": {"holder": "hub-a", "assigned": "hub-a"},
            "b": {"holder": "hub-b", "assigned": "hub-b"},
        },
    }
    assert {c["name"]: c["owner"] for c in doc["clusters"]} == {"a": "hub-a", "b": "hub-b"}
    assert "sharding" not in status_document(fleet_state(tmp_path / "alone"), lambda _: None)


def test_the_web_apis_overview_of_a_replica_matches_the_openapi_file(tmp_path: Path) -> None:
    state = fleet_state(tmp_path, replica="hub-a")
    state.shard_member(True, None)
    state.shard_gained("a", None)
    state.shard_lost("a", "the membership could not be renewed in time")
    mine = {"a": "hub-a"}
    state.shard_seen(owned={"a"}, live={"hub-a"}, gone={"hub-b"}, holders=mine, assigned=mine)
    doc = overview(state)
    assert [c.get("owner") for c in doc["clusters"]] == ["hub-a", None]
    registry = Registry().with_resource("openapi", Resource.from_contents(OPENAPI, DRAFT202012))
    for value, schema in [(doc, "Overview"), *((e.to_json(), "Event") for e in state.events())]:
        validator = Draft202012Validator({"$ref": f"openapi#/components/schemas/{schema}"}, registry=registry)
        assert not list(validator.iter_errors(value)), schema
