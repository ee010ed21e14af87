"""Notifications without a test bed: the inventory keys, the dedup and rate rules, commit-status planning,
and the notifier delivering to real loopback receivers (tests/notifysinks.py) from a real fleet state."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath

import pytest

from fleetd.daemon.events import Event, EventKind, Severity
from fleetd.daemon.state import FleetState
from fleetd.errors import InventoryError
from fleetd.inventory import Cluster, Notification, Sync, TargetKind, load_fleet
from fleetd.inventory.notifications import EVENT_KINDS
from fleetd.notify import Notifications
from fleetd.notify.credentials import Credential
from fleetd.notify.dedup import Gate, RateLimit, Reason
from fleetd.notify.delivery import Delivery
from fleetd.notify.forges import CommitStatusTarget, WebhookTarget
from fleetd.notify.messages import Notice, notice
from fleetd.notify.post import Poster
from fleetd.notify.statuses import CommitStatus, Latest, plan
from tests.fleetstate import fleet_state
from tests.integration.fleet import eventually
from tests.notifysinks import HOOK_KEY, TOKEN, Sinks, notifications_toml, running_sinks

pytestmark = pytest.mark.timeout(30)


def rule(**overrides: object) -> Notification:
    base: dict[str, object] = {"name": "chat", "kind": TargetKind.APPRISE, "url": "json://127.0.0.1/x"}
    return Notification(**(base | overrides))  # type: ignore[arg-type]


def event(kind: EventKind, cluster: str | None = "pi5", sync: str | None = "apps", **more: object) -> Event:
    severity = Severity.ERROR if kind.value.endswith(("failed", "unreachable")) else Severity.INFO
    fields: dict[str, object] = {"kind": kind, "message": f"{kind} happened", "severity": severity,
                                 "cluster": cluster, "sync": sync, "revision": "a" * 40}  # fmt: skip
    return Event(**(fields | more))  # type: ignore[arg-type]


# -- the inventory -----------------------------------------------------------------------------


def fleet_file(tmp_path: Path, notifications: str) -> Path:
    (tmp_path / "clusters").mkdir(exist_ok=True)
    path = tmp_path / "fleetd.toml"
    path.write_text(f'[fleet]\nclusters_dir = "clusters"\n[source]\nurl = "/srv/fleet.git"\n{notifications}')
    return path


def problems(tmp_path: Path, notifications: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_fleet(fleet_file(tmp_path, notifications))
    return [f"{p.key}: {p.message}" for p in caught.value.problems]


def test_the_inventory_knows_exactly_the_event_kinds_the_daemon_emits() -> None:
    assert {k.value for k in EventKind} == EVENT_KINDS


def test_notifications_of_every_type_load_with_their_defaults(tmp_path: Path) -> None:
    sinks = Sinks(port=1)
    fleet = load_fleet(fleet_file(tmp_path, notifications_toml(sinks, tmp_path)))
    by_name = {n.name: n for n in fleet.notifications}
    assert set(by_name) == {"chat", "hook", "github", "gitea", "gitlab"}
    chat = by_name["chat"]
    assert chat.url_file == tmp_path / "chat.url"
    assert (chat.dedup_window, chat.rate_limit, chat.severity) == (3600.0, (30, 3600.0), "warning")
    assert by_name["github"].context == "fleetd"
    assert by_name["gitlab"].repository == "me/fleet"


def test_a_rate_limit_and_selectors_are_read(tmp_path: Path) -> None:
    text = (
        '[[notifications]]\nname = "n"\ntype = "apprise"\nurl = "ntfy://ntfy.sh/t"\nrate_limit = "5/10m"\n'
        'dedup_window = "15m"\nclusters = ["edge-*"]\nsyncs = ["apps"]\nevents = ["drift.*"]\n'
    )
    (n,) = load_fleet(fleet_file(tmp_path, text)).notifications
    assert (n.rate_limit, n.dedup_window, n.clusters, n.syncs, n.events) == (
        (5, 600.0),
        900.0,
        ("edge-*",),
        ("apps",),
        ("drift.*",),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "n"\ntype = "pager"\n', "unknown notification type 'pager'"),
        ('name = "n"\ntype = "apprise"\n', "exactly one of url or url_file"),
        ('name = "n"\ntype = "webhook"\nurl = "https://h/x"\n', "missing required key 'secret_file'"),
        (
            'name = "n"\ntype = "webhook"\nurl = "ftp://h"\nsecret_file = "k"\n',
            "is not an http:// or https:// URL",
        ),
        ('name = "n"\ntype = "github"\nrepository = "me/f"\n', "missing required key 'token_file'"),
        (
            'name = "n"\ntype = "gitea"\nrepository = "me/f"\ntoken_file = "t"\n',
            "missing required key 'api_url'",
        ),
        ('name = "n"\ntype = "github"\nrepository = "me"\ntoken_file = "t"\n', "is not a repository"),
        (
            'name = "n"\ntype = "github"\nrepository = "me/f"\ntoken_file = "t"\nrate_limit = "1/1h"\n',
            "commit statuses are sent on every change",
        ),
        ('name = "n"\ntype = "apprise"\nurl = "x://y"\nevents = ["drift.sideways"]\n', "unknown event kind"),
        ('name = "n"\ntype = "apprise"\nurl = "x://y"\nrate_limit = "lots"\n', "is not a rate limit"),
        ('name = "n"\ntype = "apprise"\nurl = "x://y"\nseverity = "fatal"\n', "unknown severity"),
        ('name = "n"\ntype = "apprise"\nurl = "x://y"\nsecret_file = "k"\n', "does not apply to type"),
    ],
)
def test_a_wrong_notification_is_a_located_problem_that_says_what_to_write(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(tmp_path, "[[notifications]]\n" + text)
    assert any(expected in p for p in found), found


def test_two_notifications_with_one_name_are_refused(tmp_path: Path) -> None:
    one = '[[notifications]]\nname = "n"\ntype = "apprise"\nurl = "x://y"\n'
    assert any("names must be unique" in p for p in problems(tmp_path, one + one))


# -- dedup, recovery and the rate limit ------------------------------------------------------------


def test_a_failure_is_sent_once_within_the_window_then_its_recovery_once() -> None:
    gate = Gate(rule(dedup_window=600.0))
    verdicts = [
        gate.decide(event(EventKind.RECONCILE_FAILED, message=f"attempt {i}"), 10.0 + i) for i in range(5)
    ]
    assert [v.reason if v else None for v in verdicts] == [Reason.FAILURE, None, None, None, None]
    assert all(v is not None and v.suppressed for v in verdicts[1:])
    recovery = gate.decide(event(EventKind.RECONCILE_SUCCEEDED), 20.0)
    assert recovery is not None
    assert (recovery.reason, recovery.repeats) == (Reason.RECOVERY, 4)
    assert gate.decide(event(EventKind.RECONCILE_SUCCEEDED), 21.0) is None  # not selected: info < warning


def test_a_failure_that_outlasts_the_window_is_sent_again_as_still_failing() -> None:
    gate = Gate(rule(dedup_window=60.0))
    gate.decide(event(EventKind.RECONCILE_FAILED), 0.0)
    gate.decide(event(EventKind.RECONCILE_FAILED), 30.0)
    again = gate.decide(event(EventKind.RECONCILE_FAILED), 61.0)
    assert again is not None
    assert (again.reason, again.repeats) == (Reason.STILL_FAILING, 1)


def test_failures_of_different_syncs_are_separate_problems() -> None:
    gate = Gate(rule())
    first = gate.decide(event(EventKind.RECONCILE_FAILED, sync="apps"), 0.0)
    second = gate.decide(event(EventKind.RECONCILE_FAILED, sync="infra"), 0.0)
    assert first is not None
    assert second is not None
    assert first.reason == second.reason == Reason.FAILURE


def test_no_recovery_is_sent_for_a_failure_the_rule_did_not_select() -> None:
    gate = Gate(rule(clusters=("edge-*",)))
    assert gate.decide(event(EventKind.RECONCILE_FAILED), 0.0) is None
    assert gate.decide(event(EventKind.RECONCILE_SUCCEEDED), 1.0) is None


def test_other_events_are_deduplicated_by_kind_subject_and_revision() -> None:
    gate = Gate(rule(events=("drift.*",), severity="info"))
    drift = event(EventKind.DRIFT_REPORTED, objects=("ConfigMap ns/a",))
    assert [getattr(gate.decide(drift, t), "reason", None) for t in (0.0, 1.0)] == [Reason.EVENT, None]
    other = dataclasses.replace(drift, objects=("ConfigMap ns/b",))
    assert getattr(gate.decide(other, 2.0), "reason", None) == Reason.EVENT


def test_the_rate_limit_holds_back_a_storm_and_refills_with_time() -> None:
    limit = RateLimit(3, 60.0, now=0.0)
    assert [limit.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limit.allow(20.0)  # one token back after a third of the period
    assert limit.take_held() == 2


def test_a_message_names_cluster_sync_revision_what_happened_and_what_to_do() -> None:
    gate = Gate(rule())
    failed = event(EventKind.RECONCILE_FAILED, message="ConfigMap demo/x: invalid name")
    verdict = gate.decide(failed, 0.0)
    assert verdict is not None
    text = notice("home", failed, verdict)
    assert text.title == f"[home] pi5/apps failed at {'a' * 12}"
    for part in ("Cluster: pi5", "Sync: apps", f"Revision: {'a' * 40}", "ConfigMap demo/x: invalid name",
                 "What to do:", "fleetd diff pi5 apps"):  # fmt: skip
        assert part in text.body


# -- commit statuses ------------------------------------------------------------------------------


@dataclasses.dataclass
class Rollout:
    waves: dict[str, int]
    allowed_waves: dict[int, str]
    halted: int | None = None

    def clusters(self) -> tuple[Cluster, ...]:
        return tuple(
            Cluster(name=n, file=Path(f"/{n}.toml"), kubeconfig=Path("/k"), wave=w, syncs=(SYNC,))
            for n, w in self.waves.items()
        )

    def allowed(self, wave: int) -> str | None:
        return self.allowed_waves.get(wave)

    def halted_at(self) -> int | None:
        return self.halted

    def held(self) -> bool:
        return False


SYNC = Sync(name="apps", path=PurePosixPath("apps"), source_file=Path("/f.toml"))
SHA = "b" * 40


def test_a_new_revision_is_pending_everywhere_and_says_which_wave_a_cluster_waits_for() -> None:
    view = Rollout({"canary": 0, "prod": 1}, {0: SHA, 1: "old"})
    found = {
        s.context: s
        for s in plan(event(EventKind.SOURCE_REVISION, None, None, revision=SHA), view, prefix="fleetd")
    }
    assert set(found) == {"fleetd/canary/apps", "fleetd/prod/apps"}
    assert found["fleetd/canary/apps"].state == found["fleetd/prod/apps"].state == "pending"
    assert "waiting for rollout wave 1" in found["fleetd/prod/apps"].description


def test_a_halted_rollout_marks_the_held_waves_pending_with_the_reason() -> None:
    view = Rollout({"canary": 0, "prod": 1}, {0: SHA, 1: "old"}, halted=0)
    found = plan(event(EventKind.ROLLOUT_HALTED, None, None, revision=SHA), view, prefix="fleetd")
    assert [(s.cluster, s.state) for s in found] == [("prod", "pending")]
    assert "held back: wave 0 failed" in found[0].description


def test_a_status_is_sent_only_when_it_changes_and_pending_never_replaces_a_result() -> None:
    view = Rollout({"pi5": 0}, {0: SHA})
    latest = Latest()

    def sent(kind: EventKind, message: str = "3 objects, 1 changed, 0 pruned") -> list[str]:
        statuses = plan(event(kind, revision=SHA, message=message), view, prefix="fleetd")
        return [s.state for s in statuses if latest.changed(s)]

    assert sent(EventKind.RECONCILE_FAILED, "boom") == ["failure"]
    assert sent(EventKind.RECONCILE_FAILED, "boom again, worded differently") == []
    assert sent(EventKind.RECONCILE_SUCCEEDED) == ["success"]
    assert sent(EventKind.RECONCILE_SUCCEEDED, "3 objects, 0 changed, 0 pruned") == []
    assert [s.state for s in plan(event(EventKind.ROLLOUT_ADVANCED, None, None, revision=SHA), view,
                                  prefix="fleetd") if latest.changed(s)] == []  # fmt: skip


def test_gitlab_gets_its_own_path_header_and_state_names(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN)
    gitlab = rule(kind=TargetKind.GITLAB, url=None, api_url="https://gl/api/v4", repository="grp/proj",
                  token_file=tmp_path / "t")  # fmt: skip
    target = CommitStatusTarget(Poster(), gitlab, Credential.read(tmp_path / "t", "token"))
    view = Rollout({"pi5": 0}, {0: SHA})
    (status,) = plan(event(EventKind.RECONCILE_FAILED, revision=SHA), view, prefix="fleetd")
    url, body, headers = target.request(status)
    assert url == f"https://gl/api/v4/projects/grp%2Fproj/statuses/{SHA}"
    assert (body["state"], body["name"], headers) == ("failed", "fleetd/pi5/apps", {"PRIVATE-TOKEN": TOKEN})


# -- delivery to real receivers --------------------------------------------------------------------


def test_a_credential_never_shows_in_its_repr(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN)
    credential = Credential.read(tmp_path / "t", "token")
    assert TOKEN not in repr(credential)
    assert TOKEN not in str(credential)


async def test_a_delivery_retries_a_failing_receiver_with_back_off_until_it_answers(tmp_path: Path) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    async with running_sinks() as sinks, Poster() as poster:
        sinks.fail_next["hook"] = 2
        delivery: Delivery[Notice] = Delivery(
            "hook", WebhookTarget(poster, sinks.url("/hook"), Credential(HOOK_KEY, tmp_path)), counts,
            retry_base=0.02,
        )  # fmt: skip
        failed = event(EventKind.RECONCILE_FAILED)
        verdict = Gate(rule()).decide(failed, 0.0)
        assert verdict is not None
        delivery.put(notice("home", failed, verdict))
        task = asyncio.create_task(delivery.run())
        try:
            await eventually(lambda: _true(counts[("hook", "sent")] == 1), "the webhook delivered", 10)
        finally:
            task.cancel()
    assert sinks.calls["hook"] == 3
    assert not sinks.bad
    ids = {h["_headers"]["X-Fleetd-Delivery"] for h in sinks.hooks}
    assert len(sinks.hooks) == 1
    assert len(ids) == 1


async def test_a_refused_token_is_not_retried_counted_as_failed_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    counts: Counter[tuple[str, str]] = Counter()
    (tmp_path / "wrong").write_text("wrong-token-canary-51d0\n")
    async with running_sinks() as sinks, Poster() as poster:
        github = rule(kind=TargetKind.GITHUB, url=None, api_url=sinks.url("/github"), repository="me/fleet",
                      token_file=tmp_path / "wrong")  # fmt: skip
        target = CommitStatusTarget(poster, github, Credential.read(tmp_path / "wrong", "token"))
        delivery: Delivery[CommitStatus] = Delivery("github", target, counts, retry_base=0.02)
        (status,) = plan(event(EventKind.RECONCILE_SUCCEEDED, revision=SHA), Rollout({"pi5": 0}, {0: SHA}),
                         prefix="fleetd")  # fmt: skip
        delivery.put(status)
        task = asyncio.create_task(delivery.run())
        try:
            await eventually(lambda: _true(counts[("github", "failed")] == 1), "the refusal counted", 10)
        finally:
            task.cancel()
    assert sinks.bad == ["github auth"]  # asked once, not retried
    assert "answered 401" in caplog.text
    assert "wrong-token-canary-51d0" not in caplog.text


@asynccontextmanager
async def notifier(state: FleetState, text: str, tmp_path: Path) -> AsyncIterator[Notifications]:
    rules = load_fleet(fleet_file(tmp_path / "inv", text)).notifications
    state.inventory(dataclasses.replace(state.fleet, notifications=rules), None)
    running = Notifications(state, retry_base=0.02)
    task = asyncio.create_task(running.run())
    try:
        await eventually(lambda: _true(state.bus.subscribers > 0), "the notifier subscribed", 5)
        yield running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_notifier_sends_one_failure_per_sync_then_one_recovery_to_apprise_and_the_webhook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "inv").mkdir()
    state = fleet_state(tmp_path / "fleet")
    async with (
        running_sinks() as sinks,
        notifier(state, notifications_toml(sinks, tmp_path / "inv"), tmp_path),
    ):
        for _ in range(4):
            for sync in ("s", "t"):
                state.emit(
                    event(EventKind.RECONCILE_FAILED, cluster="a", sync=sync, message="ConfigMap x: invalid")
                )
        for sync in ("s", "t"):
            state.emit(event(EventKind.RECONCILE_SUCCEEDED, cluster="a", sync=sync))
        await eventually(
            lambda: _true(len(sinks.apprise["chat"]) == 4 and len(sinks.hooks) == 4), "deliveries", 10
        )
        await asyncio.sleep(0.2)  # nothing more arrives
    titles = sorted(doc["title"] for doc in sinks.apprise["chat"])
    assert [t.split("] ")[1].split(" at")[0] for t in titles] == [
        "a/s failed",
        "a/s recovered",
        "a/t failed",
        "a/t recovered",
    ]
    assert {doc["type"] for doc in sinks.apprise["chat"]} == {"failure", "success"}
    assert sorted(h["reason"] for h in sinks.hooks) == ["failure", "failure", "recovery", "recovery"]
    assert not sinks.bad
    assert state.notifications[("chat", "suppressed")] == 6
    assert state.notifications[("chat", "sent")] == 4
    for secret in (TOKEN, HOOK_KEY, "/apprise/chat"):
        assert secret not in caplog.text


async def _true(value: bool) -> bool:
    return value


async def test_a_dead_receiver_never_slows_the_state_that_publishes(tmp_path: Path) -> None:
    (tmp_path / "inv").mkdir()
    state = fleet_state(tmp_path / "fleet")
    text = (f'[[notifications]]\nname = "dead"\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\n'
            f'secret_file = "{tmp_path / "inv" / "k"}"\nevents = ["*"]\nseverity = "info"\n')  # fmt: skip
    (tmp_path / "inv" / "k").write_text("k")
    async with notifier(state, text, tmp_path):
        started = time.monotonic()
        for i in range(2000):
            state.bus.publish(event(EventKind.OPERATOR_ACTION, message=f"action {i}"))
        assert time.monotonic() - started < 1.0
