"""``manage.py preflight``: exit codes, one-line reasons and the ad_push_diffs.json artifact."""

from __future__ import annotations

import json
import logging
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from platforms.sandbox.models import SandboxRequest
from scenarios.management.commands.preflight import Command
from scenarios.models import GuardrailPolicy, PreflightRun
from scenarios.services import export
from scenarios.services.preflight import preflight_document
from tests.engine_helpers import sandbox_world


def entity(external_id: str, sections: dict, entity_type: str = "campaign") -> dict:
    return {
        "entity_type": entity_type,
        "entity_id": external_id,
        "name": external_id,
        "status": "active",
        "metadata": {"platform": "sandbox"},
        "sections": sections,
    }


BUNDLE = {
    "plan_id": "plan-7",
    "entities": [
        entity("sandbox-cmp-1", {"spend": {"daily_budget": {"unit": "EUR", "value": "150.00"}}}),
        entity("sandbox-adset-1-1", {"spend": {"bid_amount": {"unit": "EUR", "value": "1.80"}}}, "ad_set"),
        entity("sandbox-cmp-2", {"delivery": {"status": {"unit": None, "value": "active"}}}),
    ],
}


@pytest.fixture
def state_dir(tmp_path, settings) -> Path:
    settings.STATE_DIR = tmp_path / "state"
    return settings.STATE_DIR


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


def write_bundle(tmp_path: Path, data, name: str = "bundle.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def preflight(path: Path, *, tenant: str = "acme", plan: str = "plan-7", mode: str | None = None) -> str:
    """Run the command as ``call_command`` does; returns what it printed."""
    from io import StringIO

    out = StringIO()
    extra = ["--mode", mode] if mode else []
    call_command(
        "preflight",
        "--tenant",
        tenant,
        "--plan-run-id",
        plan,
        "--proposed-actions-path",
        str(path),
        *extra,
        stdout=out,
    )
    return out.getvalue()


def exported(state_dir: Path) -> list[dict]:
    """The exported documents, newest first: the index names each run's own file."""
    index = json.loads((state_dir / "ad_push_diffs.json").read_text())
    return [json.loads((state_dir / head["document"]).read_text()) for head in index]


# It ran: exit 0 ---------------------------------------------------------------------------------


def test_a_preflight_is_stored_appended_to_the_artifact_and_summarised(tmp_path, state_dir, world):
    printed = preflight(write_bundle(tmp_path, BUNDLE), mode="assist")
    run = PreflightRun.objects.get()
    assert run.status == "succeeded" and run.mode == "assist" and run.plan_id == "plan-7" and run.created_by is None
    assert printed.count("\n") == 1, "one paragraph"
    assert f"Preflight {run.run_id} for tenant acme (plan plan-7, mode assist)" in printed
    assert "3 entities checked against the live platforms, 2 would change, 1 unchanged" in printed
    assert f"appended to {state_dir / 'ad_push_diffs.json'}" in printed
    [document] = exported(state_dir)
    assert document == json.loads(json.dumps(preflight_document(run)))
    assert document["run_id"] == run.run_id and document["source_plan_id"] == "plan-7"


def test_the_artifact_lists_runs_newest_first_and_stays_bounded(tmp_path, state_dir, world, settings):
    settings.AD_PUSH_DIFFS_KEEP = 2
    path = write_bundle(tmp_path, BUNDLE)
    for _ in range(3):
        preflight(path)
    newest_first = list(PreflightRun.objects.order_by("-created_at", "-id").values_list("run_id", flat=True))
    assert [d["run_id"] for d in exported(state_dir)] == newest_first[:2]


def test_guardrail_breaches_are_findings_not_failures(tmp_path, state_dir, world, tenant):
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("10"), severities={})
    printed = preflight(write_bundle(tmp_path, BUNDLE))
    document = exported(state_dir)[0]
    severities = sorted({b["severity"] for b in document["breaches"]})
    assert any(b["code"] == "max_increase_pct" for b in document["breaches"])
    assert "guardrail breaches: " in printed and "guardrail breaches: none" not in printed
    assert all(s in printed for s in severities)


def test_another_run_never_rewrites_an_earlier_runs_file(state_dir):
    big = {**doc("pf-1"), "entities": [{"entity_id": i, "name": "x" * 100} for i in range(500)]}
    export.export_append(document=big)
    first = state_dir / "ad_push_diffs" / "pf-1.json"
    size, stamp = first.stat().st_size, first.stat().st_mtime_ns
    export.export_append(document=doc("pf-2"))
    assert (first.stat().st_size, first.stat().st_mtime_ns) == (size, stamp)
    index = (state_dir / "ad_push_diffs.json").read_text()
    assert len(index) < 2000 and "entities" not in json.loads(index)[1]
    assert [d["run_id"] for d in exported(state_dir)] == ["pf-2", "pf-1"]


def test_runs_falling_off_the_index_lose_their_files(state_dir, settings):
    settings.AD_PUSH_DIFFS_KEEP = 2
    for i in range(3):
        export.export_append(document=doc(f"pf-{i}"))
    assert sorted(p.name for p in (state_dir / "ad_push_diffs").iterdir()) == ["pf-1.json", "pf-2.json"]


def test_an_index_of_the_earlier_format_is_split_into_run_files(state_dir):
    state_dir.mkdir(parents=True)
    (state_dir / "ad_push_diffs.json").write_text(json.dumps([doc("pf-0")]))
    export.export_append(document=doc("pf-1"))
    assert exported(state_dir) == [doc("pf-1"), doc("pf-0")]
    assert all("entities" not in head for head in json.loads((state_dir / "ad_push_diffs.json").read_text()))


def test_the_preflight_only_reads_the_platform(tmp_path, state_dir, world):
    preflight(write_bundle(tmp_path, BUNDLE))
    methods = set(SandboxRequest.objects.filter(account=world.account).values_list("method", flat=True))
    assert "apply" not in methods
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")


# It did not run: non-zero, one line --------------------------------------------------------------


def refused(path: Path, **kwargs) -> str:
    with pytest.raises(CommandError) as excinfo:
        preflight(path, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_an_unknown_tenant_is_refused(tmp_path, state_dir, world):
    assert refused(write_bundle(tmp_path, BUNDLE), tenant="nope") == "unknown tenant 'nope': no tenant has that slug"


def test_malformed_json_is_refused_naming_the_position(tmp_path, state_dir, world):
    message = refused(write_bundle(tmp_path, b'{"entities": [\n  {"entity_id": }'))
    assert message.startswith("malformed input: The bundle was refused and nothing was imported (1 error).")
    assert "not valid JSON: Expecting value at line 2, column 17" in message


def test_a_bad_value_is_refused_naming_entity_and_field(tmp_path, state_dir, world):
    data = json.loads(json.dumps(BUNDLE))
    data["entities"][1]["sections"]["spend"]["bid_amount"]["value"] = "-1.80"
    message = refused(write_bundle(tmp_path, data))
    assert message.endswith(
        "entities[1] (sandbox-adset-1-1), sections.spend.bid_amount.value: cannot be negative; got -1.80."
    )


def test_a_missing_file_is_refused(tmp_path, state_dir, world):
    assert refused(tmp_path / "nope.json").startswith(f"malformed input: cannot read {tmp_path / 'nope.json'}")


@override_settings(IMPORT_MAX_BYTES=1024)
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, state_dir, world):
    message = refused(write_bundle(tmp_path, b" " * 5000))
    assert "the limit is 1.0 KB (1024 bytes)" in message


def test_an_entity_never_synced_is_a_missing_baseline(tmp_path, state_dir, world):
    data = json.loads(json.dumps(BUNDLE))
    data["entities"].append(entity("sandbox-cmp-9", {"delivery": {"status": {"value": "paused"}}}))
    assert refused(write_bundle(tmp_path, data)) == (
        "missing baseline: sandbox-cmp-9 has never been synced; run manage.py sync_platforms"
    )


def test_expired_credentials_are_a_platform_auth_failure_and_the_run_is_kept_as_failed(tmp_path, state_dir, world):
    world.connection.credentials = {"access_token": "revoked"}
    world.connection.save()
    message = refused(write_bundle(tmp_path, BUNDLE))
    assert message.startswith("platform auth failure: Could not read the live state of 3 entities")
    run = PreflightRun.objects.get()
    assert run.status == "failed" and "refused the access token" in run.error_message
    assert not (state_dir / "ad_push_diffs.json").exists()


def test_exit_status_is_0_when_it_ran_and_1_with_one_line_on_stderr_when_not(
    tmp_path, state_dir, world, monkeypatch, capsys
):
    # run_from_argv closes every connection when it ends; the test's transaction needs it open.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    path = write_bundle(tmp_path, BUNDLE)
    argv = ["manage.py", "preflight", "--tenant", "acme", "--plan-run-id", "p", "--proposed-actions-path", str(path)]
    Command().run_from_argv(argv)  # returns normally: exit status 0
    assert "Preflight pf-" in capsys.readouterr().out
    argv[3] = "nope"
    with pytest.raises(SystemExit) as excinfo:
        Command().run_from_argv(argv)
    assert excinfo.value.code == 1
    assert capsys.readouterr().err == "CommandError: unknown tenant 'nope': no tenant has that slug\n"


# The artifact survives crashes and concurrent writers ---------------------------------------------------


def doc(run_id: str) -> dict:
    return {"run_id": run_id, "entities": [], "summary": {"entities": 0}}


def test_a_crash_while_writing_leaves_the_previous_file_intact(state_dir, monkeypatch):
    export.export_append(document=doc("pf-1"))
    real_dump = json.dump

    def dies_halfway(obj, handle, **kwargs):
        handle.write('[{"run_id": "pf-2", "entit')
        handle.flush()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(json, "dump", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        export.export_append(document=doc("pf-2"))
    monkeypatch.setattr(json, "dump", real_dump)
    assert exported(state_dir) == [doc("pf-1")]
    assert sorted(p.name for p in state_dir.iterdir()) == [
        "ad_push_diffs",
        "ad_push_diffs.json",
        "ad_push_diffs.json.lock",
    ]
    assert sorted(p.name for p in (state_dir / "ad_push_diffs").iterdir()) == ["pf-1.json"]


def test_a_crash_before_the_swap_leaves_the_previous_file_intact(state_dir, monkeypatch):
    export.export_append(document=doc("pf-1"))
    monkeypatch.setattr(export.os, "replace", lambda *args: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        export.export_append(document=doc("pf-2"))
    assert exported(state_dir) == [doc("pf-1")]
    assert not list(state_dir.glob("**/*.tmp"))


def test_a_broken_file_is_moved_aside_with_a_warning_and_a_new_list_started(state_dir, caplog):
    state_dir.mkdir(parents=True)
    (state_dir / "ad_push_diffs.json").write_text('[{"run_id": "pf-0", "ent')
    with caplog.at_level(logging.WARNING, logger="scenarios.services.export"):
        export.export_append(document=doc("pf-1"))
    assert exported(state_dir) == [doc("pf-1")]
    [aside] = state_dir.glob("ad_push_diffs.json.corrupt-*")
    assert aside.read_text() == '[{"run_id": "pf-0", "ent'
    assert "moved it to" in caplog.text and aside.name in caplog.text


def test_exporting_the_same_run_twice_keeps_one_copy(state_dir):
    export.export_append(document=doc("pf-1"))
    export.export_append(document=doc("pf-2"))
    export.export_append(document={**doc("pf-1"), "summary": {"entities": 1}})
    assert [(d["run_id"], d["summary"]["entities"]) for d in exported(state_dir)] == [("pf-1", 1), ("pf-2", 0)]


def test_concurrent_writers_lose_nothing(state_dir):
    threads = [threading.Thread(target=export.export_append, kwargs={"document": doc(f"pf-{i}")}) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(d["run_id"] for d in exported(state_dir)) == sorted(f"pf-{i}" for i in range(20))
