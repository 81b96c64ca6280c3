"""Celery tasks of installment plans: thin, named, idempotent (ARCHITECTURE.md)."""

from __future__ import annotations

import logging

from celery import shared_task

from bnpl import applications, selectors, services

log = logging.getLogger(__name__)

CHUNK = 500


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


@shared_task(name="bnpl.expire_applications", acks_late=True)
def expire_applications() -> dict[str, int]:
    """Fan out: expire open applications past their timeout (their orders are released)
    and decide pending ones a crash left undecided. Chunks of ``CHUNK`` ids per task."""
    due = applications.applications_due()
    for chunk in _chunks(due["expire"]):
        expire_applications_chunk.delay(chunk)
    for chunk in _chunks(due["decide"]):
        decide_applications_chunk.delay(chunk)
    return {"expire": len(due["expire"]), "decide": len(due["decide"])}


@shared_task(name="bnpl.expire_applications_chunk", acks_late=True)
def expire_applications_chunk(application_ids: list[int]) -> int:
    """Expire each application still open and due; running it twice expires nothing twice."""
    done = 0
    for application_id in application_ids:
        try:
            applications.application_expire(application_id=application_id)
        except Exception:  # one bad row must not starve the others; the next run retries
            log.exception("expiring credit application %s failed", application_id)
        else:
            done += 1
    return done


@shared_task(name="bnpl.decide_applications_chunk", acks_late=True)
def decide_applications_chunk(application_ids: list[int]) -> int:
    """Decide each application still pending; an application decided meanwhile is left."""
    done = 0
    for application_id in application_ids:
        try:
            applications.application_decide(application_id=application_id)
        except Exception:
            log.exception("deciding credit application %s failed", application_id)
        else:
            done += 1
    return done


@shared_task(name="bnpl.cancel_partner_application", acks_late=True)
def cancel_partner_application(application_id: int, reason: str) -> str:
    """Cancel at the lending partner an application that ended; running it twice sends one
    cancellation (the same idempotency key) and audits a refusal once."""
    application = applications.application_partner_cancel(
        application_id=application_id, reason=reason
    )
    return str(application.status)


@shared_task(name="bnpl.plan_credit_return", acks_late=True)
def plan_credit_return(customer_id: int, currency: str) -> int:
    """Square the customer's installment receivable with the wallet; running it twice
    moves the money once (the second run finds nothing left)."""
    return services.plan_credit_return(customer_id=customer_id, currency=currency)


@shared_task(name="bnpl.plan_credits_sweep", acks_late=True)
def plan_credits_sweep() -> int:
    """Fan out: every installment receivable off its open installments (a credit whose
    after-commit return never ran, or one from before returns existed) is squared."""
    due = selectors.receivables_off_balance()
    for customer_id, currency in due:
        plan_credit_return.delay(customer_id, currency)
    return len(due)
