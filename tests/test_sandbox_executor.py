"""The sandbox executor keeps every guarantee of the executor contract, faults included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from platforms.fakes.faults import FaultKind
from platforms.sandbox.executor import SandboxExecutor
from platforms.sandbox.models import SandboxEntity, SandboxFault, SandboxRequest
from platforms.types import (
    HINTS,
    Change,
    ConnectionConfig,
    EntityRef,
    EntityStatus,
    EntityType,
    ErrorCode,
    Field,
    OutcomeStatus,
    PlatformCallError,
)
from tests.factories import (
    SANDBOX_TOKEN,
    SandboxAccountFactory,
    SandboxAdFactory,
    SandboxAdSetFactory,
    SandboxCampaignFactory,
    SandboxFaultFactory,
)

CAMPAIGN, AD_SET, AD = EntityType.CAMPAIGN, EntityType.AD_SET, EntityType.AD


@pytest.fixture
def account(db):
    return SandboxAccountFactory(account_id="sbx-acme", currency="EUR")


@pytest.fixture
def cmp(account):
    return SandboxCampaignFactory(account=account, external_id="sandbox-cmp-1001", daily_budget=Decimal("400.00"))


@pytest.fixture
def adset(cmp):
    return SandboxAdSetFactory(account=cmp.account, parent=cmp, external_id="sandbox-adset-2003", bid=Decimal("1.50"))


@pytest.fixture
def sleeps():
    return []


def make_executor(account, *, token=SANDBOX_TOKEN, currency=None, sleeps=None, throttle=None) -> SandboxExecutor:
    config = ConnectionConfig(
        connection_id=1,
        platform="sandbox",
        account_id=account.account_id,
        currency=currency or account.currency,
        credentials={"access_token": token},
    )
    kwargs = {"throttle": throttle} if throttle else {}
    return SandboxExecutor(config, sleep=(sleeps.append if sleeps is not None else lambda s: None), **kwargs)


@pytest.fixture
def executor(account, sleeps):
    return make_executor(account, sleeps=sleeps)


def ref(entity) -> EntityRef:
    return EntityRef(entity_type=EntityType(entity.entity_type), external_id=entity.external_id)


def budget_change(entity, amount: str) -> Change:
    return Change(ref=ref(entity), field=Field.DAILY_BUDGET, value=Decimal(amount), key=f"k-{entity.external_id}")


def fresh(entity) -> SandboxEntity:
    return SandboxEntity.objects.get(pk=entity.pk)


def apply_requests(account):
    return SandboxRequest.objects.filter(account=account, method=SandboxRequest.Method.APPLY)


# Reads ------------------------------------------------------------------------------


def test_read_state_returns_existing_entities_with_parents_and_money_in_the_currency(executor, cmp, adset):
    states = executor.read_state([ref(cmp), ref(adset)])
    campaign_state = states[("campaign", "sandbox-cmp-1001")]
    adset_state = states[("ad_set", "sandbox-adset-2003")]
    assert campaign_state.daily_budget == Decimal("400.00")
    assert str(campaign_state.daily_budget) == "400.00"
    assert campaign_state.currency == "EUR"
    assert adset_state.parent_external_id == "sandbox-cmp-1001"
    assert adset_state.bid == Decimal("1.50")
    assert adset_state.targeting == {"countries": ["DE"]}
    assert executor.round_trips == 1


def test_read_state_leaves_out_unknown_and_deleted_entities_but_keeps_removed_ones(executor, account, cmp, adset):
    removed = SandboxCampaignFactory(account=account, status=EntityStatus.REMOVED)
    SandboxEntity.objects.filter(pk=adset.pk).update(deleted_at=timezone.now())
    unknown = EntityRef(entity_type=CAMPAIGN, external_id="sandbox-cmp-404")
    wrong_type = EntityRef(entity_type=AD_SET, external_id=cmp.external_id)
    states = executor.read_state([ref(cmp), ref(adset), ref(removed), unknown, wrong_type])
    assert set(states) == {("campaign", cmp.external_id), ("campaign", removed.external_id)}
    assert states[("campaign", removed.external_id)].status == EntityStatus.REMOVED


def test_list_entities_returns_campaigns_before_ad_sets_before_ads(executor, account, adset):
    SandboxAdFactory(account=account, parent=adset)
    types = [state.entity_type for state in executor.list_entities()]
    assert types == [CAMPAIGN, AD_SET, AD]


# Writes -----------------------------------------------------------------------------


def test_apply_changes_budget_status_and_bid_in_one_request_applied_exactly_once(executor, account, cmp, adset):
    changes = [
        budget_change(cmp, "460.00"),
        Change(ref=ref(cmp), field=Field.STATUS, value=EntityStatus.PAUSED, key="a"),
        Change(ref=ref(adset), field=Field.BID, value=Decimal("1.80"), key="b"),
    ]
    outcomes = executor.apply(changes)
    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED] * 3
    assert [o.change for o in outcomes] == changes
    assert fresh(cmp).daily_budget == Decimal("460.00")
    assert fresh(cmp).status == "paused"
    assert fresh(adset).bid == Decimal("1.80")
    request = apply_requests(account).get()
    assert (request.operation_count, request.applied_count, request.validate_only) == (3, 3, False)
    assert {o.request_id for o in outcomes} == {request.request_id}


def test_validate_only_validates_and_changes_nothing(executor, account, cmp):
    outcomes = executor.apply([budget_change(cmp, "460.00")], validate_only=True)
    assert outcomes[0].status == OutcomeStatus.VALIDATED
    assert fresh(cmp).daily_budget == Decimal("400.00")
    assert apply_requests(account).get().applied_count == 0


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        (Field.DAILY_BUDGET, Decimal("10.001"), "more than 2 decimal places"),
        (Field.DAILY_BUDGET, Decimal("-5.00"), "greater than zero"),
        (Field.DAILY_BUDGET, Decimal("0"), "greater than zero"),
        (Field.DAILY_BUDGET, Decimal("NaN"), "not a finite amount"),
        (Field.DAILY_BUDGET, 12.5, "not float"),
        (Field.STATUS, "archived", "must be active, paused or removed"),
    ],
)
@pytest.mark.parametrize("validate_only", [True, False])
def test_invalid_values_fail_with_invalid_value_and_are_never_applied(executor, cmp, field, value, says, validate_only):
    outcome = executor.apply([Change(ref=ref(cmp), field=field, value=value)], validate_only=validate_only)[0]
    assert outcome.status == OutcomeStatus.FAILED
    assert outcome.error.code == ErrorCode.INVALID_VALUE
    assert says in outcome.error.message
    assert "sandbox-cmp-1001" in outcome.error.message
    assert fresh(cmp).daily_budget == Decimal("400.00") and fresh(cmp).status == "active"


def test_fields_an_entity_type_does_not_have_fail_not_supported(executor, account, cmp, adset):
    ad = SandboxAdFactory(account=account, parent=adset)
    outcomes = executor.apply(
        [
            Change(ref=ref(cmp), field=Field.BID, value=Decimal("1.00")),
            Change(ref=ref(ad), field=Field.DAILY_BUDGET, value=Decimal("10.00")),
            Change(ref=ref(ad), field=Field.STATUS, value=EntityStatus.PAUSED),
        ]
    )
    assert [o.error.code if o.error else None for o in outcomes] == [
        ErrorCode.NOT_SUPPORTED,
        ErrorCode.NOT_SUPPORTED,
        None,
    ]
    assert "only on ad sets" in outcomes[0].error.message


def test_a_removed_entity_cannot_be_changed(executor, account):
    removed = SandboxCampaignFactory(account=account, status=EntityStatus.REMOVED)
    outcome = executor.apply([Change(ref=ref(removed), field=Field.STATUS, value=EntityStatus.ACTIVE)])[0]
    assert outcome.error.code == ErrorCode.NOT_FOUND
    assert fresh(removed).status == "removed"


def test_requests_are_chunked_at_1000_operations_and_throttled_before_each(account, cmp):
    SandboxEntity.objects.bulk_create(
        [
            SandboxEntity(
                account=account, entity_type="ad_set", external_id=f"bulk-{i}", parent=cmp, name=f"Ad set {i}"
            )
            for i in range(1500)
        ]
    )
    throttled: list[int] = []
    executor = make_executor(account, throttle=throttled.append)
    changes = [
        Change(ref=EntityRef(entity_type=AD_SET, external_id=f"bulk-{i}"), field=Field.BID, value=Decimal("0.90"))
        for i in range(1500)
    ]
    outcomes = executor.apply(changes)
    assert all(o.status == OutcomeStatus.APPLIED for o in outcomes)
    assert throttled == [1000, 500]
    assert executor.round_trips == 2
    assert list(apply_requests(account).order_by("id").values_list("operation_count", flat=True)) == [1000, 500]
    assert SandboxEntity.objects.filter(account=account, bid=Decimal("0.90")).count() == 1500


def test_latency_is_slept_on_every_request(account, cmp, sleeps):
    account.latency_ms = 250
    account.save()
    executor = make_executor(account, sleeps=sleeps)
    executor.read_state([ref(cmp)])
    executor.apply([budget_change(cmp, "410.00")])
    assert sleeps == [0.25, 0.25]


# Authentication ---------------------------------------------------------------------


def test_a_wrong_token_is_refused_as_auth_expired_on_reads_and_writes(account, cmp):
    executor = make_executor(account, token="revoked-token")
    with pytest.raises(PlatformCallError) as refused:
        executor.read_state([ref(cmp)])
    assert refused.value.error.code == ErrorCode.AUTH_EXPIRED
    assert "revoked-token" not in refused.value.error.message
    outcome = executor.apply([budget_change(cmp, "460.00")])[0]
    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.AUTH_EXPIRED)
    assert fresh(cmp).daily_budget == Decimal("400.00")


def test_an_unknown_account_is_not_found(db, account):
    account.account_id = "sbx-elsewhere"
    executor = make_executor(account)
    with pytest.raises(PlatformCallError) as refused:
        executor.list_entities()
    assert refused.value.error.code == ErrorCode.NOT_FOUND
    assert "sbx-elsewhere" in refused.value.error.message


def test_connection_test_refuses_a_currency_that_differs_from_the_account(account, cmp):
    assert "1 entities readable" in make_executor(account).test_connection()
    with pytest.raises(PlatformCallError) as refused:
        make_executor(account, currency="USD").test_connection()
    assert refused.value.error.code == ErrorCode.INVALID_VALUE
    assert "billed in EUR" in refused.value.error.message


# Faults -----------------------------------------------------------------------------

WHOLE_REQUEST_FAULTS = [
    (FaultKind.RATE_LIMIT, ErrorCode.RATE_LIMITED, True),
    (FaultKind.SERVER_ERROR, ErrorCode.TRANSIENT, True),
    (FaultKind.HTML_502, ErrorCode.TRANSIENT, True),
    (FaultKind.AUTH_EXPIRED, ErrorCode.AUTH_EXPIRED, False),
    (FaultKind.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED, False),
    (FaultKind.INVALID_VALUE, ErrorCode.INVALID_VALUE, False),
    (FaultKind.CONFLICT, ErrorCode.CONFLICT, True),
]


@pytest.mark.parametrize(("kind", "code", "retryable"), WHOLE_REQUEST_FAULTS)
def test_whole_request_faults_fail_every_change_with_the_taxonomy_code_and_apply_nothing(
    executor, account, cmp, adset, kind, code, retryable
):
    SandboxFaultFactory(account=account, kind=kind, retry_after=7)
    outcomes = executor.apply([budget_change(cmp, "460.00"), budget_change(adset, "95.50")])
    for outcome in outcomes:
        assert outcome.status == OutcomeStatus.FAILED
        assert outcome.error.code == code
        assert outcome.error.retryable is retryable
        assert outcome.error.hint == HINTS[code]
    assert outcomes[0].error.retry_after == (7 if kind == FaultKind.RATE_LIMIT else None)
    assert fresh(cmp).daily_budget == Decimal("400.00")
    assert fresh(adset).daily_budget == Decimal("80.00")
    assert apply_requests(account).get().fault == kind


def test_timeout_before_apply_reports_unknown_and_applies_nothing(executor, account, cmp, sleeps):
    SandboxFaultFactory(account=account, kind=FaultKind.TIMEOUT_BEFORE_APPLY)
    outcome = executor.apply([budget_change(cmp, "460.00")])[0]
    assert outcome.status == OutcomeStatus.UNKNOWN
    assert outcome.error.code == ErrorCode.TRANSIENT
    assert "may or may not have been applied" in outcome.error.message
    assert fresh(cmp).daily_budget == Decimal("400.00")
    assert apply_requests(account).get().applied_count == 0
    assert sleeps == []  # the timeout is simulated, never waited for


def test_timeout_after_apply_reports_unknown_but_the_change_is_on_the_platform_once(executor, account, cmp):
    SandboxFaultFactory(account=account, kind=FaultKind.TIMEOUT_AFTER_APPLY)
    outcome = executor.apply([budget_change(cmp, "460.00")])[0]
    assert outcome.status == OutcomeStatus.UNKNOWN
    assert fresh(cmp).daily_budget == Decimal("460.00")
    request = apply_requests(account).get()
    assert request.applied_count == 1
    assert "response was lost" in request.outcome


def test_entity_deleted_makes_the_listed_entities_and_their_children_vanish(executor, account, cmp, adset):
    other = SandboxCampaignFactory(account=account)
    SandboxFaultFactory(account=account, kind=FaultKind.ENTITY_DELETED, entity_ids=[cmp.external_id])
    outcomes = executor.apply([budget_change(cmp, "460.00"), budget_change(other, "123.00")])
    assert outcomes[0].error.code == ErrorCode.NOT_FOUND
    assert outcomes[1].status == OutcomeStatus.APPLIED
    assert executor.read_state([ref(cmp), ref(adset), ref(other)]).keys() == {("campaign", other.external_id)}


def test_partial_failure_fails_the_listed_entities_and_applies_the_rest(executor, account, cmp, adset):
    SandboxFaultFactory(account=account, kind=FaultKind.PARTIAL_FAILURE, entity_ids=[adset.external_id])
    outcomes = executor.apply([budget_change(cmp, "460.00"), budget_change(adset, "95.50")])
    assert outcomes[0].status == OutcomeStatus.APPLIED
    assert (outcomes[1].status, outcomes[1].error.code) == (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)
    assert fresh(cmp).daily_budget == Decimal("460.00")
    assert fresh(adset).daily_budget == Decimal("80.00")
    assert apply_requests(account).get().applied_count == 1


def test_silent_noop_reports_applied_but_the_read_back_shows_the_old_value(executor, account, cmp):
    SandboxFaultFactory(account=account, kind=FaultKind.SILENT_NOOP)
    assert executor.apply([budget_change(cmp, "460.00")])[0].status == OutcomeStatus.APPLIED
    assert executor.read_state([ref(cmp)])[("campaign", cmp.external_id)].daily_budget == Decimal("400.00")
    assert apply_requests(account).get().applied_count == 0


def test_rate_limit_twice_then_the_change_goes_through(executor, account, cmp):
    fault = SandboxFaultFactory(account=account, kind=FaultKind.RATE_LIMIT, remaining=2)
    statuses = [executor.apply([budget_change(cmp, "460.00")])[0].status for _ in range(3)]
    assert statuses == [OutcomeStatus.FAILED, OutcomeStatus.FAILED, OutcomeStatus.APPLIED]
    fault.refresh_from_db()
    assert fault.exhausted
    assert list(apply_requests(account).order_by("id").values_list("applied_count", flat=True)) == [0, 0, 1]


def test_a_fault_forever_never_runs_out(executor, account, cmp):
    SandboxFaultFactory(account=account, kind=FaultKind.SERVER_ERROR, remaining=None)
    for _ in range(3):
        assert executor.apply([budget_change(cmp, "460.00")])[0].status == OutcomeStatus.FAILED
    assert SandboxFault.objects.get().remaining is None


def test_read_faults_raise_and_leave_writes_alone(executor, account, cmp):
    SandboxFaultFactory(account=account, kind=FaultKind.RATE_LIMIT, scope="read", retry_after=3)
    assert executor.apply([budget_change(cmp, "460.00")])[0].status == OutcomeStatus.APPLIED
    with pytest.raises(PlatformCallError) as refused:
        executor.read_state([ref(cmp)])
    assert (refused.value.error.code, refused.value.error.retry_after) == (ErrorCode.RATE_LIMITED, 3)
    assert refused.value.ambiguous is False


def test_a_timed_out_read_is_never_ambiguous(executor, account, cmp):
    SandboxFaultFactory(account=account, kind=FaultKind.TIMEOUT_AFTER_APPLY, scope="read")
    with pytest.raises(PlatformCallError) as refused:
        executor.list_entities()
    assert refused.value.error.code == ErrorCode.TRANSIENT
    assert refused.value.ambiguous is False


def test_a_fault_for_named_entities_waits_for_a_request_that_names_them(executor, account, cmp, adset):
    SandboxFaultFactory(account=account, kind=FaultKind.CONFLICT, entity_ids=[adset.external_id])
    assert executor.apply([budget_change(cmp, "460.00")])[0].status == OutcomeStatus.APPLIED
    assert executor.apply([budget_change(adset, "95.50")])[0].error.code == ErrorCode.CONFLICT


def test_a_stored_amount_finer_than_the_minor_unit_reads_back_exactly_never_rounded(db):
    """The sandbox claims whole ISO minor units; a value written past its checks is shown as it is."""
    from platforms.sandbox.executor import entity_state
    from platforms.sandbox.models import SandboxEntity
    from tests.factories import SandboxCampaignFactory

    campaign = SandboxCampaignFactory()
    SandboxEntity.objects.filter(pk=campaign.pk).update(daily_budget=Decimal("10.0050"))
    row = SandboxEntity.objects.select_related("parent").get(pk=campaign.pk)

    assert entity_state(row, "EUR").daily_budget == Decimal("10.005")


def test_nothing_in_the_product_imports_a_fake(settings):
    """Importing every product module (not tests, benchmarks or platforms.fakes) loads no fake."""
    import subprocess
    import sys

    code = (
        "import django, os, pathlib, importlib, sys;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'budgetradar.settings'); django.setup();"
        "names = ['.'.join(f.with_suffix('').parts).removesuffix('.__init__')"
        " for p in ('budgetradar', 'platforms', 'actions', 'scenarios') for f in pathlib.Path(p).rglob('*.py')"
        " if 'fakes' not in f.parts];"
        "[importlib.import_module(n) for n in names];"
        "loaded = sorted(m for m in sys.modules if m.startswith('platforms.fakes'));"
        "print(len(names), loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=settings.BASE_DIR
    )

    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
