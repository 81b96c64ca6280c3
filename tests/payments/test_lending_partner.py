"""A lending partner decides and funds plans: the real adapter and services against the
payment sandbox over HTTP, its decisions coming back as signed webhooks to a live server."""

import threading
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from celery import current_app
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from core import clock
from core.errors import InvalidInput
from core.models import AuditEntry
from core.money import Money
from payments import crypto, events, reliability
from payments.adapters.lending_partner import (
    PartnerApplication,
    PartnerCustomer,
    PartnerDecisionKind,
    PartnerLine,
    RequestedProduct,
)
from payments.lending import (
    IdempotencyKeyReused,
    NotALendingPartner,
    partner_application_cancel,
    partner_application_submit,
    partner_applications_reconcile,
    partner_decision_for,
)
from payments.models import (
    PartnerApplication as PartnerApplicationRecord,
)
from payments.models import (
    Provider,
    ProviderAccount,
    WebhookEvent,
)
from payments.services import provider_webhook_secret_rotate
from payments.tasks import check_provider_health, reconcile_partner_applications
from tests.payments.conftest import deliver

pytestmark = pytest.mark.django_db(transaction=True)

REFERENCE_TYPE = "test.financed_order"
PAST_RECONCILE_AGE = timedelta(seconds=settings.PAYMENTS_PARTNER_RECONCILE_AFTER_SECONDS + 1)


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


def application(email: str = "anna@example.com", *, kyc: str = "verified") -> PartnerApplication:
    return PartnerApplication(
        amount=eur("600.00"),
        customer=PartnerCustomer(id="42", email=email, tier="gold", kyc=kyc),
        lines=(
            PartnerLine(
                sku="TV-55",
                name="Television 55 inch",
                quantity=1,
                unit_price=eur("500.00"),
                total=eur("500.00"),
                merchant_category="electronics",
            ),
            PartnerLine(
                sku="HDMI",
                name="Cable",
                quantity=2,
                unit_price=eur("50.00"),
                total=eur("100.00"),
                merchant_category="electronics",
            ),
        ),
        product=RequestedProduct(code="partner-12m", installment_count=12, frequency="monthly"),
    )


def submit(account, reference_id: str, key: str, app: PartnerApplication | None = None):
    return partner_application_submit(
        account=account,
        reference_type=REFERENCE_TYPE,
        reference_id=reference_id,
        application=app or application(),
        idempotency_key=key,
    )


def sandbox_applications(sandbox) -> list[dict]:
    return requests.get(f"{sandbox}/partner/sandbox/applications", timeout=5).json()["data"]


@pytest.fixture
def partner(sandbox):
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.LENDING_PARTNER,
        enabled=True,
        base_url=f"{sandbox}/partner",
        credentials_encrypted=crypto.encrypt({"secret": "pk_test_partner"}),
        currency="EUR",
        created_at=now,
        updated_at=now,
    )
    account.secret = provider_webhook_secret_rotate(account_id=account.pk)
    return account


@pytest.fixture
def decisions():
    """What the owner's registered handler was told: [(reference_id, decision), …]."""
    told: list = []
    events.register_partner_decision(REFERENCE_TYPE, lambda ref, d: told.append((ref, d)))
    yield told
    events._partner_decisions.pop(REFERENCE_TYPE, None)


@pytest.fixture
def wired(sandbox, partner, live_server):
    """The sandbox partner notifies the live app; tasks run at once."""
    requests.post(
        f"{sandbox}/partner/sandbox/config",
        json={
            "webhook_url": f"{live_server.url}/webhooks/lending_partner/",
            "webhook_secret": partner.secret,
        },
        timeout=5,
    )
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


def test_an_approval_stores_the_partners_terms_reference_and_funding(partner, sandbox, decisions):
    decision = submit(partner, "1", "pa-1")

    assert decision.decision == PartnerDecisionKind.APPROVED
    [sent] = sandbox_applications(sandbox)
    assert decision.partner_reference == sent["id"]
    # Minor units on the wire, the currency once, the customer and lines as given.
    assert (sent["amount"], sent["currency"]) == (60000, "EUR")
    assert sent["merchant_reference"] == f"{REFERENCE_TYPE}:1"
    assert sent["idempotency_key"] == "pa-1"
    assert decision.terms.installment_count == 12
    assert decision.terms.frequency == "monthly"
    assert decision.terms.apr == Decimal("19.99")
    assert decision.terms.origination_fee == eur("6.00")
    assert decision.terms.installment_fee == eur("0.99")
    assert decision.terms.total_repayable == Money(sent["terms"]["total_repayable"], "EUR")
    assert decision.funded_amount == eur("600.00")

    record = PartnerApplicationRecord.objects.get()
    assert (record.status, record.partner_reference) == ("approved", sent["id"])
    assert record.terms["apr"] == "19.99"
    assert record.funded_amount == 60000
    assert record.request["items"][1] == {
        "sku": "HDMI",
        "name": "Cable",
        "quantity": 2,
        "unit_price": 5000,
        "total_amount": 10000,
        "merchant_category": "electronics",
    }
    assert record.decided_at is not None
    assert AuditEntry.objects.filter(action="payments.partner_decided").count() == 1
    # The owner is told once, with the same decision.
    assert decisions == [("1", decision)]
    assert partner_decision_for(reference_type=REFERENCE_TYPE, reference_id="1") == decision


@pytest.mark.parametrize(
    ("email", "kyc", "codes"),
    [
        ("bob+decline@example.com", "verified", ["insufficient_credit_history"]),
        ("carl@example.com", "pending", ["kyc_incomplete"]),
    ],
)
def test_a_decline_carries_the_partners_reasons(partner, sandbox, decisions, email, kyc, codes):
    decision = submit(partner, "2", "pd-2", application(email, kyc=kyc))

    assert decision.decision == PartnerDecisionKind.DECLINED
    assert [r.code for r in decision.reasons] == codes
    assert all(r.message for r in decision.reasons)
    assert (decision.terms, decision.funded_amount) == (None, None)
    record = PartnerApplicationRecord.objects.get()
    assert record.status == "declined"
    assert [r["code"] for r in record.reasons] == codes
    assert (record.terms, record.funded_amount) == ({}, None)
    assert decisions == [("2", decision)]


@pytest.mark.parametrize(("outcome", "status"), [("approve", "approved"), ("decline", "declined")])
def test_a_referred_application_is_decided_once_by_the_signed_webhook(
    wired, partner, sandbox, decisions, outcome, status
):
    referred = submit(partner, "3", "pr-3", application("cara+refer@example.com"))
    assert referred.decision == PartnerDecisionKind.REFERRED
    assert PartnerApplicationRecord.objects.get().status == "referred"
    assert decisions == []  # nothing final yet

    decided = requests.post(
        f"{sandbox}/partner/sandbox/applications/{referred.partner_reference}/decide",
        json={"decision": outcome},
        timeout=15,
    ).json()
    assert decided["webhook_status"] == 200, decided
    record = PartnerApplicationRecord.objects.get()
    assert record.status == status
    assert WebhookEvent.objects.get().status == "processed"
    [(reference_id, decision)] = decisions
    assert (reference_id, decision.decision) == ("3", status)
    if status == "approved":
        assert decision.terms.apr == Decimal("19.99")
        assert record.funded_amount == 60000
    else:
        assert [r.code for r in decision.reasons] == ["affordability"]

    # The same notification again: stored once, nothing changes, nobody is told twice.
    again = requests.post(
        f"{sandbox}/partner/sandbox/applications/{referred.partner_reference}/redeliver",
        timeout=15,
    ).json()
    assert (again["webhook_status"], again["webhook_answer"]["duplicate"]) == (200, True)
    assert WebhookEvent.objects.count() == 1
    assert len(decisions) == 1
    [sent] = sandbox_applications(sandbox)
    assert sent["notifications"] == [decided["event_id"]]


def test_a_decision_for_a_decided_application_is_ignored_and_recorded(
    wired, partner, sandbox, decisions
):
    referred = submit(partner, "4", "pr-4", application("dora+refer@example.com"))
    decided = requests.post(
        f"{sandbox}/partner/sandbox/applications/{referred.partner_reference}/decide",
        json={"decision": "approve"},
        timeout=15,
    ).json()
    # A contradicting decision under another event id, validly signed, arrives later.
    late = {
        "id": "evt_late_1",
        "type": "application.declined",
        "data": {**decided["application"], "status": "declined", "reasons": [{"code": "x"}]},
    }
    response = deliver(Client(), late, partner.secret, provider="lending_partner")
    assert (response.status_code, response.json()["duplicate"]) == (200, False)

    record = PartnerApplicationRecord.objects.get()
    assert record.status == "approved"
    assert record.funded_amount == 60000
    assert [(r["source"], r["decision"]) for r in record.ignored_reports] == [
        ("webhook", "declined")
    ]
    assert record.flagged
    assert "declined after the decision approved" in record.flag_reason
    assert WebhookEvent.objects.get(event_id="evt_late_1").status == "processed"
    assert [d.decision for _, d in decisions] == ["approved"]


def test_a_badly_signed_decision_is_rejected_and_changes_nothing(
    wired, partner, sandbox, decisions
):
    referred = submit(partner, "5", "pr-5", application("emil+refer@example.com"))
    [sent] = sandbox_applications(sandbox)
    forged = {
        "id": "evt_forged",
        "type": "application.approved",
        "data": {**sent, "status": "approved", "funding": {"amount": 60000}},
    }
    response = deliver(Client(), forged, "whsec_not_the_partners", provider="lending_partner")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhooks.signature_invalid"
    assert WebhookEvent.objects.count() == 0
    assert PartnerApplicationRecord.objects.get().status == "referred"
    assert referred.decision == PartnerDecisionKind.REFERRED
    assert decisions == []


def test_an_unanswered_application_is_unknown_then_read_back_not_resubmitted(
    partner, sandbox, decisions
):
    decision = submit(partner, "6", "pt-6", application("finn+timeout@example.com"))

    assert decision.decision == PartnerDecisionKind.UNKNOWN
    record = PartnerApplicationRecord.objects.get()
    assert (record.status, record.partner_reference) == ("unknown", None)
    assert decisions == []
    # Too young: an answer may still be on its way, the reconciler leaves it alone.
    assert reconcile_partner_applications() == {"looked_at": 0}

    with clock.travel(PAST_RECONCILE_AGE):
        assert reconcile_partner_applications() == {"looked_at": 1, "approved": 1}

    [sent] = sandbox_applications(sandbox)  # read back by key: still one application
    record.refresh_from_db()
    assert (record.status, record.partner_reference) == ("approved", sent["id"])
    assert record.funded_amount == 60000
    [(reference_id, told)] = decisions
    assert (reference_id, told.decision, told.partner_reference) == ("6", "approved", sent["id"])


def test_a_referred_application_whose_webhook_is_lost_is_read_back(partner, sandbox, decisions):
    referred = submit(partner, "7", "pr-7", application("gus+refer@example.com"))
    # No webhook URL is configured: the partner's notification goes nowhere.
    decided = requests.post(
        f"{sandbox}/partner/sandbox/applications/{referred.partner_reference}/decide",
        json={"decision": "decline"},
        timeout=15,
    ).json()
    assert decided["webhook_status"] == 0

    with clock.travel(PAST_RECONCILE_AGE):
        assert reconcile_partner_applications() == {"looked_at": 1, "declined": 1}
        assert reconcile_partner_applications() == {"looked_at": 0}
    assert PartnerApplicationRecord.objects.get().status == "declined"
    assert [(ref, d.decision) for ref, d in decisions] == [("7", "declined")]


def test_an_application_the_partner_never_received_fails_after_the_reconcile_age(
    partner, sandbox, decisions
):
    real_url = partner.base_url
    ProviderAccount.objects.filter(pk=partner.pk).update(base_url="http://127.0.0.1:9/partner")
    partner.refresh_from_db()
    decision = submit(partner, "8", "pn-8")
    assert decision.decision == PartnerDecisionKind.UNKNOWN  # retried, and still no partner
    assert PartnerApplicationRecord.objects.get().request["merchant_reference"].endswith(":8")

    ProviderAccount.objects.filter(pk=partner.pk).update(base_url=real_url)
    with clock.travel(PAST_RECONCILE_AGE):
        assert reconcile_partner_applications() == {"looked_at": 1, "failed": 1}
    record = PartnerApplicationRecord.objects.get()
    assert record.status == "failed"
    assert [r["code"] for r in record.reasons] == ["not_received"]
    assert sandbox_applications(sandbox) == []  # read back, never sent again
    assert [(ref, d.decision) for ref, d in decisions] == [("8", "failed")]


def test_resubmitting_with_the_same_key_makes_one_application(partner, sandbox, decisions):
    first = submit(partner, "9", "pi-9", application("hana+error-once@example.com"))
    assert first.decision == PartnerDecisionKind.APPROVED  # a 500, retried with the same key
    again = submit(partner, "9", "pi-9", application("hana+error-once@example.com"))

    assert again == first
    assert len(sandbox_applications(sandbox)) == 1
    assert PartnerApplicationRecord.objects.count() == 1
    assert len(decisions) == 1
    with pytest.raises(IdempotencyKeyReused):
        submit(partner, "10", "pi-9", application("hana+error-once@example.com"))
    with pytest.raises(IdempotencyKeyReused):
        submit(partner, "9", "pi-9", replace(application(), customer=PartnerCustomer("42", "x@y")))
    assert len(sandbox_applications(sandbox)) == 1
    assert PartnerApplicationRecord.objects.count() == 1


def test_a_partner_account_is_configured_in_the_admin_and_its_applications_shown(
    admin_client, sandbox
):
    form = {
        "provider": "lending_partner",
        "enabled": "on",
        "mode": "sandbox",
        "region": "eu",
        "base_url": f"{sandbox}/partner",
        "currency": "EUR",
        "merchant_categories": "[]",
        "rotation_overlap_hours": "24",
        "credential_id": "",
        "credential_secret": "pk_test_from_admin",
    }
    response = admin_client.post(reverse("admin:payments_provideraccount_add"), form)
    assert response.status_code == 302, response.content[:3000]
    account = ProviderAccount.objects.get()
    assert crypto.decrypt(account.credentials_encrypted) == {"secret": "pk_test_from_admin"}
    assert check_provider_health() == {"lending_partner": True}

    submit(account, "11", "pa-11")
    page = admin_client.get(reverse("admin:payments_partnerapplication_changelist"))
    assert page.status_code == 200
    assert "600.00 EUR" in page.content.decode()
    record = PartnerApplicationRecord.objects.get()
    detail = admin_client.get(reverse("admin:payments_partnerapplication_change", args=[record.pk]))
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content


def test_a_failing_owner_is_told_again_by_the_reconciler(partner, sandbox):
    told: list = []

    def flaky(reference_id, decision):
        told.append((reference_id, decision.decision))
        if len(told) == 1:
            raise RuntimeError("the owner's database was busy")

    events.register_partner_decision(REFERENCE_TYPE, flaky)
    try:
        assert submit(partner, "12", "pf-12").decision == PartnerDecisionKind.APPROVED
        assert PartnerApplicationRecord.objects.get().owner_notified_at is None
        assert reconcile_partner_applications() == {"looked_at": 0}  # not yet due
        with clock.travel(PAST_RECONCILE_AGE):
            assert reconcile_partner_applications() == {"looked_at": 0, "handed_up": 1}
            assert reconcile_partner_applications() == {"looked_at": 0}
    finally:
        events._partner_decisions.pop(REFERENCE_TYPE, None)
    assert told == [("12", "approved"), ("12", "approved")]
    assert PartnerApplicationRecord.objects.get().owner_notified_at is not None


def test_bad_input_is_refused_and_nothing_is_written_or_sent(partner, sandbox, unchanged_db):
    check = unchanged_db()
    with pytest.raises(InvalidInput) as wrong_currency:
        submit(partner, "13", "pb-13", replace(application(), amount=Money(60000, "USD")))
    assert wrong_currency.value.code == "payments.invalid_partner_application"
    dollars = replace(
        application(),
        amount=Money(60000, "USD"),
        lines=(PartnerLine("A", "a", 1, Money(60000, "USD"), Money(60000, "USD")),),
    )
    with pytest.raises(InvalidInput) as not_lent:
        submit(partner, "13", "pb-13", dollars)
    assert not_lent.value.code == "payments.currency_mismatch"
    ProviderAccount.objects.filter(pk=partner.pk).update(enabled=False)
    partner.refresh_from_db()
    with pytest.raises(NotALendingPartner):
        submit(partner, "13", "pb-13")
    ProviderAccount.objects.filter(pk=partner.pk).update(enabled=True)
    check()
    assert sandbox_applications(sandbox) == []


def test_a_request_the_partner_refuses_as_invalid_is_a_decline_with_its_code(partner, sandbox):
    weekly_daily = replace(
        application(), product=RequestedProduct(code="x", installment_count=4, frequency="daily")
    )
    decision = submit(partner, "14", "pv-14", weekly_daily)
    assert decision.decision == PartnerDecisionKind.DECLINED
    assert [r.code for r in decision.reasons] == ["invalid_request:invalid_request"]
    assert "frequency" in decision.reasons[0].message
    assert PartnerApplicationRecord.objects.get().partner_reference is None
    assert sandbox_applications(sandbox) == []


def test_a_decision_that_overtakes_the_answer_is_matched_by_its_key(
    wired, partner, sandbox, decisions
):
    decision = submit(partner, "15", "po-15", application("ivo+timeout@example.com"))
    assert decision.decision == PartnerDecisionKind.UNKNOWN
    [sent] = sandbox_applications(sandbox)
    # The partner's notification arrives before any answer named its reference.
    notice = {"id": "evt_early_1", "type": "application.approved", "data": sent}
    assert deliver(Client(), notice, partner.secret, provider="lending_partner").status_code == 200

    record = PartnerApplicationRecord.objects.get()
    assert (record.status, record.partner_reference) == ("approved", sent["id"])
    assert [(ref, d.decision) for ref, d in decisions] == [("15", "approved")]
    with clock.travel(PAST_RECONCILE_AGE):
        assert reconcile_partner_applications() == {"looked_at": 0}
    assert len(decisions) == 1


def test_an_open_circuit_fails_the_application_without_sending_it(partner, sandbox, decisions):
    breaker = reliability.breaker_for(Provider.LENDING_PARTNER)
    for _ in range(breaker.failure_threshold):
        breaker._after(ok=False)
    assert breaker.state == "open"

    decision = submit(partner, "16", "pc-16")

    assert decision.decision == PartnerDecisionKind.FAILED
    assert [r.code for r in decision.reasons] == ["partner_unavailable"]
    assert PartnerApplicationRecord.objects.get().status == "failed"
    assert sandbox_applications(sandbox) == []
    assert [(ref, d.decision) for ref, d in decisions] == [("16", "failed")]


def test_two_submissions_racing_with_one_key_open_one_application(partner, sandbox, decisions):
    barrier = threading.Barrier(2)
    results: list = []

    def race() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(submit(partner, "17", "pk-17").decision)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 2
    # The loser reads back by key: it sees the decision, or that it is not in yet.
    assert PartnerDecisionKind.APPROVED in results
    assert set(results) <= {PartnerDecisionKind.APPROVED, PartnerDecisionKind.UNKNOWN}
    assert len(sandbox_applications(sandbox)) == 1
    assert PartnerApplicationRecord.objects.get().status == "approved"
    assert [(ref, d.decision) for ref, d in decisions] == [("17", "approved")]


def test_a_referral_the_partner_decides_on_its_own_is_notified(wired, partner, sandbox):
    requests.post(f"{sandbox}/partner/sandbox/config", json={"refer_delay_ms": 0}, timeout=5)
    told = threading.Event()
    events.register_partner_decision(REFERENCE_TYPE, lambda ref, d: told.set())
    try:
        referred = submit(partner, "18", "ps-18", application("jan+refer-decline@example.com"))
        # With no delay the notification may even overtake the answer.
        assert referred.decision in (PartnerDecisionKind.REFERRED, PartnerDecisionKind.DECLINED)
        assert told.wait(timeout=15)  # the partner's own timer sent the webhook
    finally:
        events._partner_decisions.pop(REFERENCE_TYPE, None)
    assert PartnerApplicationRecord.objects.get().status == "declined"
    assert WebhookEvent.objects.get().status == "processed"


# --- cancelling at the partner ----------------------------------------------------------


def cancel(account, reference_id: str, reason: str = "order cancelled"):
    return partner_application_cancel(
        account=account, reference_type=REFERENCE_TYPE, reference_id=reference_id, reason=reason
    )


def test_a_cancelled_referral_is_never_decided_and_a_later_approval_is_ignored(
    wired, partner, sandbox, decisions
):
    referred = submit(partner, "30", "pc-30", application("rita+refer@example.com"))
    assert referred.decision == PartnerDecisionKind.REFERRED

    record = cancel(partner, "30")

    assert (record.status, record.cancel_state) == ("cancelled", "cancelled")
    assert record.cancel_reason == "order cancelled"
    [sent] = sandbox_applications(sandbox)
    assert (sent["status"], sent["cancel_reason"]) == ("cancelled", "order cancelled")
    refused = requests.post(
        f"{sandbox}/partner/sandbox/applications/{referred.partner_reference}/decide",
        json={"decision": "approve"},
        timeout=15,
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "not_referred")
    # An approval notified anyway (validly signed) is kept, not acted on.
    late = {
        "id": "evt_after_cancel",
        "type": "application.approved",
        "data": {
            **sent,
            "status": "approved",
            "terms": {
                "installment_count": 12,
                "frequency": "monthly",
                "apr": "19.99",
                "fees": {"origination": 600, "per_installment": 99},
            },
            "funding": {"amount": 60000, "status": "funded"},
        },
    }
    assert deliver(Client(), late, partner.secret, provider="lending_partner").status_code == 200
    record.refresh_from_db()
    assert (record.status, record.funded_amount, record.flagged) == ("cancelled", None, False)
    assert [(r["source"], r["decision"]) for r in record.ignored_reports] == [
        ("webhook", "approved")
    ]
    assert decisions == []
    # Asked again: nothing more is sent or changed.
    assert cancel(partner, "30").cancel_state == "cancelled"
    assert len(sandbox_applications(sandbox)) == 1
    assert list(
        AuditEntry.objects.filter(
            target_id=str(record.pk), action__startswith="payments.partner_cancel"
        )
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["payments.partner_cancel_requested", "payments.partner_cancel_cancelled"]


def test_a_funded_application_the_partner_cancels_has_its_funding_reversed(
    partner, sandbox, decisions
):
    assert submit(partner, "31", "pc-31").decision == PartnerDecisionKind.APPROVED

    record = cancel(partner, "31", "approved after the order was cancelled")

    assert (record.status, record.cancel_state, record.funded_without_plan) == (
        "cancelled",
        "cancelled",
        False,
    )
    [sent] = sandbox_applications(sandbox)
    assert (sent["status"], sent["funding"]["status"]) == ("cancelled", "reversed")


def test_a_partner_that_refuses_to_cancel_a_funded_application_flags_it_for_finance(
    partner, sandbox, decisions
):
    requests.post(
        f"{sandbox}/partner/sandbox/config", json={"refuse_cancel_funded": True}, timeout=5
    )
    assert submit(partner, "32", "pc-32").decision == PartnerDecisionKind.APPROVED

    record = cancel(partner, "32")

    assert (record.status, record.cancel_state) == ("approved", "refused")
    assert record.funded_without_plan
    assert record.flagged
    assert "refused to cancel (already_funded)" in record.flag_reason
    [sent] = sandbox_applications(sandbox)
    assert (sent["status"], sent["funding"]["status"]) == ("approved", "funded")
    # Asked again: the refusal stands, flagged once.
    again = cancel(partner, "32")
    assert again.flag_reason == record.flag_reason


def test_nothing_is_sent_to_cancel_a_declined_application(partner, sandbox, decisions):
    assert submit(partner, "33", "pc-33", application("dan+decline@example.com")).decision == (
        PartnerDecisionKind.DECLINED
    )
    record = cancel(partner, "33")
    assert (record.status, record.cancel_state) == ("declined", "not_needed")
    assert sandbox_applications(sandbox)[0]["status"] == "declined"
    assert cancel(partner, "unknown-reference") is None


def test_a_cancel_the_partner_could_not_take_is_sent_again_by_the_reconciler(
    partner, sandbox, decisions
):
    submit(partner, "34", "pc-34", application("rob+refer@example.com"))
    breaker = reliability.breaker_for(Provider.LENDING_PARTNER)
    for _ in range(breaker.failure_threshold):
        breaker._after(ok=False)

    record = cancel(partner, "34")

    assert (record.status, record.cancel_state) == ("referred", "requested")
    assert sandbox_applications(sandbox)[0]["status"] == "referred"
    breaker._after(ok=True)  # the partner is back
    with clock.travel(PAST_RECONCILE_AGE):
        counts = partner_applications_reconcile()
    assert counts["cancel_cancelled"] == 1
    record.refresh_from_db()
    assert (record.status, record.cancel_state) == ("cancelled", "cancelled")
    assert sandbox_applications(sandbox)[0]["status"] == "cancelled"
    assert decisions == []
