"""The customer's My plans pages: every installment plan with its live schedule, one plan in
detail with an extra payment toward one installment from the wallet, and early payoff from
the wallet (the amount shown first, then confirmed).

Plans are read through ``bnpl.selectors`` (scoped to the customer: another customer's plan
is a 404) and changed only through ``bnpl.servicing``. A money-moving form carries a
one-time idempotency key, as the My Wallet repay form does: a double-click or a resubmitted
page moves the money once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from bnpl import pricing, selectors, servicing
from bnpl.errors import PlanNotFound
from bnpl.models import Plan, PlanStatus
from core import clock
from core.errors import ApplicationError, InvalidInput
from core.idempotency import (
    IdempotencyClaim,
    StoredResponse,
    idempotency_begin,
    idempotency_release,
)
from core.money import Money
from customers.models import Customer
from wallet import selectors as wallet_selectors

OPEN_STATES = (selectors.DUE, selectors.OVERDUE, selectors.SCHEDULED)
ORDER_REFERENCE = "oms.order"
# Short words for the customer; the models' labels explain the states to staff.
PLAN_STATUS_LABELS = {
    PlanStatus.ACTIVE: "Active",
    PlanStatus.COMPLETED: "Paid off",
    PlanStatus.CANCELLED: "Cancelled",
    PlanStatus.WRITTEN_OFF: "Closed",
}
STATE_LABELS = {
    selectors.PAID: "Paid",
    selectors.DUE: "Due today",
    selectors.OVERDUE: "Overdue",
    selectors.SCHEDULED: "Scheduled",
    selectors.CANCELLED: "Cancelled",
    selectors.WRITTEN_OFF: "Written off",
}


@dataclass(frozen=True)
class Row:
    """One line of the schedule table."""

    line: selectors.InstallmentView
    label: str
    payable: bool  # the plan is active and the installment still owes something


def _customer(request: HttpRequest) -> Customer:
    customer = getattr(request.user, "customer", None)
    if customer is None:
        raise Http404("This page is for customers.")
    return customer


def _plan(customer: Customer, plan_id: int) -> Plan:
    try:
        return selectors.plan_for_customer(customer=customer, plan_id=plan_id)
    except PlanNotFound:
        raise Http404("No such plan.") from None


def _order_label(plan: Plan) -> str:
    if plan.reference_type == ORDER_REFERENCE:
        return f"Order #{plan.reference_id}"
    return f"{plan.reference_type} {plan.reference_id}"


def _card(plan: Plan, view: selectors.PlanView) -> dict[str, Any]:
    """What a plan's card shows: its live schedule and, when late, a gentle word about it."""
    overdue = [i for i in view.installments if i.status == selectors.OVERDUE]
    oldest = min(overdue, key=lambda i: i.due_date, default=None)
    late_fee = pricing.Terms.from_json(plan.terms).late_fee_amount
    active = plan.status == PlanStatus.ACTIVE
    rows = [
        Row(
            line=i,
            label=STATE_LABELS.get(i.status, i.status),
            payable=active and i.status in OPEN_STATES and i.outstanding.is_positive(),
        )
        for i in view.installments
    ]
    return {
        "plan": plan,
        "view": view,
        "rows": rows,
        "status": PLAN_STATUS_LABELS.get(plan.status, plan.status),
        "product": plan.product.name,
        "order": _order_label(plan),
        "active": active,
        "overdue": overdue,
        "oldest": oldest,
        "overdue_total": sum((i.outstanding for i in overdue), Money.zero(plan.currency)),
        "days_late": (view.as_of - oldest.due_date).days if oldest else 0,
        "late_fee_possible": late_fee > 0,
        "late_fees": sum((i.late_fee for i in view.installments), Money.zero(plan.currency)),
    }


def _wallet_balance(customer: Customer, currency: str) -> Money:
    wallet = (
        wallet_selectors.wallets_for_customer(customer=customer).filter(currency=currency).first()
    )
    return wallet.balance if wallet else Money.zero(currency)


def _error_message(exc: ApplicationError) -> str:
    """The field's own words for a generic error ("At most 12.00."), else the message."""
    detail = exc.fields.get("amount", [])
    generic = exc.message == exc.default_message
    return detail[0] if detail and generic else exc.message


def _once(
    request: HttpRequest, *, body: dict[str, str], render_result: Callable[[Any], dict]
) -> IdempotencyClaim | StoredResponse:
    """Claim the form's one-time key: a repeat gets the first submission's outcome back."""
    key = request.POST.get("idempotency_key") or uuid.uuid4().hex
    return idempotency_begin(
        scope=f"user:{request.user.pk}:page",
        key=key[:255],
        method="POST",
        path=request.path,
        body=body,
        render=lambda result: (200, render_result(result)),
    )


@login_required
def my_plans(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    plans = list(selectors.plans_for_customer(customer=customer).select_related("product"))
    today = clock.business_date()
    cards = [_card(plan, selectors.plan_view(plan, today=today)) for plan in plans]
    return render(request, "bnpl/my_plans.html", {"customer": customer, "cards": cards})


@login_required
def plan_detail(request: HttpRequest, plan_id: int) -> HttpResponse:
    customer = _customer(request)
    plan = _plan(customer, plan_id)
    card = _card(plan, selectors.plan_view(plan))
    return render(
        request,
        "bnpl/plan_detail.html",
        {
            "customer": customer,
            "card": card,
            "balance": _wallet_balance(customer, plan.currency),
            "form_key": uuid.uuid4().hex,
            # What the customer typed before an error, so it is not lost.
            "attempt": request.session.pop("plan_pay_attempt", None),
        },
    )


@login_required
@require_POST
def installment_pay(request: HttpRequest, plan_id: int, number: int) -> HttpResponse:
    """Pay toward installment ``number`` of the plan from the customer's wallet."""
    customer = _customer(request)
    plan = _plan(customer, plan_id)
    raw = request.POST.get("amount", "").strip()
    try:
        if not raw:
            raise InvalidInput("Enter the amount to pay.", fields={"amount": ["Required."]})
        amount = Money.parse(raw, plan.currency)
        outcome = _once(
            request,
            body={"amount": raw},
            render_result=lambda paid: {
                "plan": paid.plan.pk,
                "installment": paid.installment.number,
                "amount": str(paid.amount),
            },
        )
        if isinstance(outcome, StoredResponse):
            messages.info(request, f"That payment of {amount} was already made.")
            return redirect("my-plan", plan_id=plan.pk)
        try:
            servicing.installment_pay(
                plan_id=plan.pk,
                number=number,
                amount=amount,
                source=servicing.WALLET,
                customer_id=customer.pk,
                actor=request.user,
                idempotency=outcome,
            )
        except BaseException:
            idempotency_release(outcome)
            raise
    except ApplicationError as exc:
        messages.error(request, _error_message(exc))
        # Keep what the customer typed, to correct it.
        request.session["plan_pay_attempt"] = {"number": number, "amount": raw[:32]}
    else:
        label = "the down payment" if number == 0 else f"installment {number}"
        messages.success(request, f"Paid {amount} toward {label} from your wallet.")
    return redirect("my-plan", plan_id=plan.pk)


@login_required
def plan_payoff(request: HttpRequest, plan_id: int) -> HttpResponse:
    """GET: what paying the plan off today costs (writes nothing). POST: pay exactly that
    from the wallet; a total that changed since it was shown is refused and shown again."""
    customer = _customer(request)
    plan = _plan(customer, plan_id)
    if request.method == "POST":
        return _payoff_confirm(request, customer, plan)
    try:
        quote = servicing.plan_payoff_preview(plan_id=plan.pk, customer_id=customer.pk)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("my-plan", plan_id=plan.pk)
    balance = _wallet_balance(customer, plan.currency)
    return render(
        request,
        "bnpl/plan_payoff.html",
        {
            "customer": customer,
            "plan": plan,
            "order": _order_label(plan),
            "quote": quote,
            "balance": balance,
            "short_by": quote.total - balance if balance < quote.total else None,
            "form_key": uuid.uuid4().hex,
        },
    )


def _payoff_confirm(request: HttpRequest, customer: Customer, plan: Plan) -> HttpResponse:
    raw = request.POST.get("expected_total", "").strip()
    try:
        if not raw:
            raise InvalidInput(
                "The payoff total is missing; look at it again.",
                fields={"expected_total": ["Required."]},
            )
        expected = Money.parse(raw, plan.currency)
        outcome = _once(
            request,
            body={"expected_total": raw},
            render_result=lambda done: {"plan": done.plan.pk, "total": str(done.quote.total)},
        )
        if isinstance(outcome, StoredResponse):
            messages.info(request, f"That payoff of {expected} was already made.")
            return redirect("my-plan", plan_id=plan.pk)
        try:
            done = servicing.plan_pay_off(
                plan_id=plan.pk,
                source=servicing.WALLET,
                expected_total=expected,
                customer_id=customer.pk,
                actor=request.user,
                idempotency=outcome,
            )
        except BaseException:
            idempotency_release(outcome)
            raise
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("my-plan-payoff", plan_id=plan.pk)
    messages.success(
        request, f"Plan paid off: {done.quote.total} from your wallet. Nothing more is owed."
    )
    return redirect("my-plan", plan_id=plan.pk)
