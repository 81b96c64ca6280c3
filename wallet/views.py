"""The customer's My Wallet page: balance, outstanding debts with a Repay form, activity."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ApplicationError, InvalidInput
from core.idempotency import StoredResponse, idempotency_begin, idempotency_release
from core.money import Money
from customers.models import Customer
from wallet import selectors, services
from wallet.errors import DebtNotFound


def _customer(request: HttpRequest) -> Customer:
    customer = getattr(request.user, "customer", None)
    if customer is None:
        raise Http404("This page is for customers.")
    return customer


@login_required
def my_wallet(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    wallets = list(selectors.wallets_for_customer(customer=customer))
    main = next((w for w in wallets if w.currency == settings.DEFAULT_CURRENCY), None)
    debts = selectors.debt_views(selectors.debts_for_customer(customer=customer, open_only=True))
    return render(
        request,
        "wallet/my_wallet.html",
        {
            "customer": customer,
            "balance": main.balance if main else Money.zero(settings.DEFAULT_CURRENCY),
            "other_wallets": [w for w in wallets if w is not main],
            "debts": debts,
            "activity": selectors.activity_for_customer(customer=customer, limit=20),
            "form_key": uuid.uuid4().hex,
            # What the customer typed before an error, so it is not lost.
            "attempt": request.session.pop("repay_attempt", None),
        },
    )


@login_required
@require_POST
def repay(request: HttpRequest, debt_id: int) -> HttpResponse:
    customer = _customer(request)
    try:
        debt = selectors.debt_for_customer(customer=customer, debt_id=debt_id)
    except DebtNotFound:
        raise Http404("No such debt.") from None
    raw = request.POST.get("amount", "").strip()
    key = request.POST.get("idempotency_key") or uuid.uuid4().hex
    try:
        if not raw:
            raise InvalidInput("Enter the amount to repay.", fields={"amount": ["Required."]})
        amount = Money.parse(raw, debt.wallet.currency)
        # A double-click or a resubmitted page carries the same key: it repays once.
        outcome = idempotency_begin(
            scope=f"user:{request.user.pk}:page",
            key=key[:255],
            method="POST",
            path=request.path,
            body={"amount": raw},
            render=lambda repaid: (200, {"debt": repaid.pk, "amount": raw}),
        )
        if isinstance(outcome, StoredResponse):
            messages.info(request, f"That repayment of {amount} was already made.")
            return redirect("my-wallet")
        try:
            services.debt_repay(
                customer_id=customer.pk,
                debt_id=debt.pk,
                amount=amount,
                actor=request.user,
                idempotency=outcome,
            )
        except BaseException:
            idempotency_release(outcome)
            raise
    except ApplicationError as exc:
        detail = exc.fields.get("amount", [])
        generic = exc.message == exc.default_message
        messages.error(request, detail[0] if detail and generic else exc.message)
        # Keep what the customer typed, to correct it.
        request.session["repay_attempt"] = {"debt": debt.pk, "amount": raw[:32]}
    else:
        messages.success(request, f"Repaid {amount} of debt #{debt.pk}.")
    return redirect("my-wallet")
