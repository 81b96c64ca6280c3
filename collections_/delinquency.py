"""Overdue marking, delinquency buckets and their actions, late fees. Run daily.

1. ``installments_mark_overdue``: one set-based UPDATE per chunk (``core.db.update_in_chunks``)
   marks every unpaid installment past its due date OVERDUE, ``overdue_since`` the day after
   its due date.
2. ``plans_delinquency_update``: for every plan with an unpaid installment past due (or a
   bucket to clear), ``days_past_due`` is the worst installment's days past due and
   ``delinquency_bucket`` the configured bucket it falls in (``CollectionsSettings.buckets``).
   Each change of bucket is a ``DelinquencyTransition`` row. Then the bucket's actions:

   - ``reminder``: one email per (plan, bucket) saying how late the plan is and what follows.
   - ``block_bnpl``: the customer's ``BorrowerProfile`` is blocked (new plans are refused)
     while any of their active plans is in such a bucket. The block is lifted by the first
     run that finds none left (the plan paid up, its installments current again) and no
     written-off plan of theirs. A block set by staff (any other reason) is never touched.
   - ``late_fee``: each unpaid installment more than the plan's ``late_fee_grace_days`` past
     due gets the plan's ``late_fee_amount`` once per bucket it reaches (a ``LateFeeCharge``
     unique per installment and bucket), within two caps from the plan's terms snapshot:
     ``late_fee_cap_installment`` per installment (0: none of its own) and
     ``late_fee_cap_plan_percent`` of the plan amount (default 25 %) for the whole plan.
     Nothing is posted: late fees are income when paid (cash basis, DESIGN.md), and the
     payment allocation takes the late fee first.
   - ``flag_write_off``: ``Plan.write_off_flagged_at`` is set for staff (cleared when the
     plan is current again); the write-off itself is a staff decision (``bnpl.writeoff``).

   ``reminder`` and ``flag_write_off`` run once per (plan, bucket) (``BucketActionDone``);
   a plan whose debits are paused (a dispute is open) keeps its bucket but takes no action.

Plans are processed ``chunk`` at a time, each chunk in one short transaction that takes its
plans ``FOR UPDATE SKIP LOCKED`` (a plan being paid is left for the next run), then their
late installments, in the house lock order (plan → installment). Queries per chunk are a
constant, whatever the number of plans in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, Sum

from bnpl.models import BorrowerProfile, Installment, InstallmentStatus, Plan, PlanStatus
from collections_.buckets import Bucket, bucket_for, buckets_parse
from collections_.models import (
    BucketAction,
    BucketActionDone,
    DelinquencyTransition,
    LateFeeCharge,
)
from collections_.selectors import collections_settings
from core import clock
from core.audit import audit_record
from core.db import update_in_chunks
from core.notifications import EmailDraft, email_queue

OVERDUE_CHUNK = 50_000
PLAN_CHUNK = 500
OPEN = (InstallmentStatus.SCHEDULED, InstallmentStatus.OVERDUE)
# Blocks set by collections say so; anything else is a staff block and left alone.
BLOCK_REASON_PREFIX = "collections:"


def installments_mark_overdue(*, business_date: date, chunk: int = OVERDUE_CHUNK) -> int:
    """Mark every scheduled installment due before ``business_date`` OVERDUE.

    Returns how many were marked; a second run the same day marks nothing more.
    """
    day_after_due = (
        "due_date + 1" if connection.vendor == "postgresql" else "date(due_date, '+1 day')"
    )
    return update_in_chunks(
        table=Installment._meta.db_table,
        assignments=f"status = %s, overdue_since = {day_after_due}",
        assignment_params=[InstallmentStatus.OVERDUE],
        where="status = %s AND due_date < %s",
        where_params=[InstallmentStatus.SCHEDULED, business_date],
        chunk=chunk,
    )


@dataclass
class DelinquencyResult:
    plans: int = 0
    transitions: int = 0
    late_fees: int = 0
    late_fee_total: dict[str, int] = field(default_factory=dict)  # currency → minor units
    blocked: int = 0
    unblocked: int = 0
    flagged: int = 0
    reminders: int = 0

    def add(self, other: DelinquencyResult) -> None:
        for f in fields(self):
            if f.name != "late_fee_total":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for currency, amount in other.late_fee_total.items():
            self.late_fee_total[currency] = self.late_fee_total.get(currency, 0) + amount


def _candidates(business_date: date):
    """Active plans with an unpaid installment past due, and plans with a bucket to clear."""
    late = Installment.objects.filter(
        plan_id=OuterRef("pk"), status__in=OPEN, due_date__lt=business_date
    )
    return Plan.objects.alias(has_late=Exists(late)).filter(
        Q(status=PlanStatus.ACTIVE, has_late=True)
        | (~Q(status=PlanStatus.WRITTEN_OFF) & (~Q(delinquency_bucket="") | Q(days_past_due__gt=0)))
    )


def plans_delinquency_update(*, business_date: date, chunk: int = PLAN_CHUNK) -> DelinquencyResult:
    """Recompute days past due and buckets of every late plan and run the buckets' actions."""
    buckets = buckets_parse(collections_settings().buckets)
    result, after_id = DelinquencyResult(), 0
    while True:
        with transaction.atomic(durable=True):
            plans = list(
                _candidates(business_date)
                .filter(pk__gt=after_id)
                .select_related("customer__user")
                .select_for_update(no_key=True, skip_locked=True, of=("self",))
                .order_by("pk")[:chunk]
            )
            if plans:
                result.add(_update_chunk(plans, buckets, business_date))
        if len(plans) < chunk:
            return result
        after_id = plans[-1].pk


def _update_chunk(plans: list[Plan], buckets: list[Bucket], day: date) -> DelinquencyResult:
    now, result = clock.now(), DelinquencyResult(plans=len(plans))
    by_id = {p.pk: p for p in plans}
    late: dict[int, list[Installment]] = defaultdict(list)
    for inst in (
        Installment.objects.select_for_update(no_key=True)
        .filter(plan_id__in=by_id, status__in=OPEN, due_date__lt=day)
        .order_by("plan_id", "number")
    ):
        late[inst.plan_id].append(inst)

    transitions, flag_changes = [], []
    entered: list[tuple[Plan, Bucket]] = []
    for plan in plans:
        days = max(((day - i.due_date).days for i in late[plan.pk]), default=0)
        bucket = bucket_for(days, buckets)
        name = bucket.name if bucket else ""
        if name != plan.delinquency_bucket:
            transitions.append(
                DelinquencyTransition(
                    plan=plan,
                    from_bucket=plan.delinquency_bucket,
                    to_bucket=name,
                    days_past_due=days,
                    business_date=day,
                    created_at=now,
                )
            )
        if not name and plan.write_off_flagged_at is not None:
            plan.write_off_flagged_at = None
            flag_changes.append(plan)
        plan.days_past_due, plan.delinquency_bucket = days, name
        if bucket and not plan.debits_paused:
            entered.append((plan, bucket))
    Plan.objects.bulk_update(plans, ["days_past_due", "delinquency_bucket"])
    DelinquencyTransition.objects.bulk_create(transitions)
    result.transitions = len(transitions)

    result.add(_once_per_bucket_actions(entered, day, now))
    result.add(_late_fees([(p, late[p.pk]) for p, _ in entered], buckets, day, now))
    if flag_changes:
        Plan.objects.bulk_update(flag_changes, ["write_off_flagged_at"])
    blocking = [b.name for b in buckets if BucketAction.BLOCK_BNPL in b.actions]
    result.add(_blocks({p.customer_id for p in plans}, blocking, now))
    return result


def _once_per_bucket_actions(
    entered: list[tuple[Plan, Bucket]], day: date, now
) -> DelinquencyResult:
    """Record each bucket action the first time a plan takes it; remind once; flag.

    The write-off flag (like the block) is a state: set whenever the plan is in a bucket
    that flags and it is not flagged yet, so a plan that was cured and fell back is flagged
    again. The reminder is an event: once per (plan, bucket).
    """
    result = DelinquencyResult()
    wanted = [
        (plan, bucket, action)
        for plan, bucket in entered
        for action in bucket.actions
        if action != BucketAction.LATE_FEE
    ]
    if not wanted:
        return result
    done = set(
        BucketActionDone.objects.filter(plan_id__in={p.pk for p, _, _ in wanted}).values_list(
            "plan_id", "bucket", "action"
        )
    )
    new = [(p, b, a) for p, b, a in wanted if (p.pk, b.name, a) not in done]
    BucketActionDone.objects.bulk_create(
        BucketActionDone(plan=p, bucket=b.name, action=a, business_date=day, created_at=now)
        for p, b, a in new
    )
    result.reminders = email_queue(
        [_bucket_reminder(p, b) for p, b, a in new if a == BucketAction.REMINDER]
    )
    flagged = [
        plan
        for plan, bucket in entered
        if BucketAction.FLAG_WRITE_OFF in bucket.actions and plan.write_off_flagged_at is None
    ]
    for plan in flagged:
        plan.write_off_flagged_at = now
        audit_record(
            action="collections.write_off_flagged",
            target=plan,
            actor_label="delinquency run",
            changes={"bucket": plan.delinquency_bucket, "days_past_due": plan.days_past_due},
        )
    if flagged:
        Plan.objects.bulk_update(flagged, ["write_off_flagged_at"])
    result.flagged = len(flagged)
    return result


def _bucket_reminder(plan: Plan, bucket: Bucket) -> EmailDraft:
    user = plan.customer.user
    return EmailDraft(
        dedupe_key=f"collections.plan_bucket:{plan.pk}:{bucket.name}",
        template="collections/plan_delinquent",
        to=user.email,
        user_id=user.pk,
        subject=f"Your installment plan #{plan.pk} is {plan.days_past_due} days past due",
        context={
            "user": user,
            "plan": plan,
            "days_past_due": plan.days_past_due,
            "bucket": bucket.name,
            "blocks_bnpl": BucketAction.BLOCK_BNPL in bucket.actions,
            "late_fees": BucketAction.LATE_FEE in bucket.actions,
            "write_off": BucketAction.FLAG_WRITE_OFF in bucket.actions,
        },
    )


def late_fee_plan_cap(plan: Plan) -> int:
    """The most late fees a plan may carry in total: a percentage of its amount, rounded down."""
    percent = Decimal(str(plan.terms.get("late_fee_cap_plan_percent", "25")))
    return int(Decimal(plan.amount) * percent / 100)


def _late_fees(
    late: list[tuple[Plan, list[Installment]]], buckets: list[Bucket], day: date, now
) -> DelinquencyResult:
    """Charge each late installment once per late-fee bucket it reached, within the caps."""
    result = DelinquencyResult()
    charging = [(p, insts) for p, insts in late if int(p.terms.get("late_fee_amount", 0)) > 0]
    if not charging:
        return result
    plan_ids = [p.pk for p, _ in charging]
    carried = dict(
        Installment.objects.filter(plan_id__in=plan_ids)
        .values("plan_id")
        .annotate(total=Sum("late_fee"))
        .values_list("plan_id", "total")
    )
    charged = set(
        LateFeeCharge.objects.filter(plan_id__in=plan_ids).values_list("installment_id", "reason")
    )
    charges, changed = [], []
    for plan, installments in charging:
        terms = plan.terms
        amount = int(terms["late_fee_amount"])
        grace = int(terms.get("late_fee_grace_days", 0))
        cap_installment = int(terms.get("late_fee_cap_installment", 0))
        room_plan = late_fee_plan_cap(plan) - (carried.get(plan.pk) or 0)
        for inst in installments:
            days = (day - inst.due_date).days
            bucket = bucket_for(days, buckets)
            if (
                bucket is None
                or BucketAction.LATE_FEE not in bucket.actions
                or days <= grace
                or (inst.pk, bucket.name) in charged
            ):
                continue
            room = room_plan
            if cap_installment:
                room = min(room, cap_installment - inst.late_fee)
            fee = min(amount, room)
            if fee <= 0:
                continue
            inst.late_fee += fee
            room_plan -= fee
            changed.append(inst)
            charges.append(
                LateFeeCharge(
                    installment=inst,
                    plan=plan,
                    reason=bucket.name,
                    currency=plan.currency,
                    amount=fee,
                    days_past_due=days,
                    business_date=day,
                    created_at=now,
                )
            )
            result.late_fee_total[plan.currency] = result.late_fee_total.get(plan.currency, 0) + fee
    # Each changed row is locked by this transaction, so writing the new total is safe.
    Installment.objects.bulk_update(changed, ["late_fee"])
    LateFeeCharge.objects.bulk_create(charges)
    result.late_fees = len(charges)
    return result


def _blocks(customer_ids: set[int], blocking: list[str], now) -> DelinquencyResult:
    """Block new plans for customers with a plan in a blocking bucket; lift lifted ones."""
    result = DelinquencyResult()
    reasons: dict[int, str] = {}
    for customer_id, plan_id, bucket in (
        Plan.objects.filter(
            customer_id__in=customer_ids,
            status=PlanStatus.ACTIVE,
            debits_paused=False,
            delinquency_bucket__in=blocking,
        )
        .order_by("pk")
        .values_list("customer_id", "pk", "delinquency_bucket")
    ):
        reasons.setdefault(
            customer_id, f"{BLOCK_REASON_PREFIX} plan #{plan_id} is {bucket} days past due"
        )
    written_off = set(
        Plan.objects.filter(
            customer_id__in=customer_ids, status=PlanStatus.WRITTEN_OFF
        ).values_list("customer_id", flat=True)
    )
    if reasons:
        BorrowerProfile.objects.bulk_create(
            [BorrowerProfile(customer_id=c) for c in reasons], ignore_conflicts=True
        )
    profiles = BorrowerProfile.objects.select_for_update(no_key=True).filter(
        customer_id__in=customer_ids
    )
    for profile in profiles.order_by("pk"):
        reason = reasons.get(profile.customer_id)
        if reason and profile.blocked_at is None:
            profile.blocked_at, profile.blocked_reason = now, reason
            action = "collections.bnpl_blocked"
            result.blocked += 1
        elif (
            not reason
            and profile.customer_id not in written_off
            and profile.blocked_at is not None
            and profile.blocked_reason.startswith(BLOCK_REASON_PREFIX)
        ):
            profile.blocked_at, profile.blocked_reason = None, ""
            action = "collections.bnpl_unblocked"
            result.unblocked += 1
        else:
            continue
        profile.save(update_fields=["blocked_at", "blocked_reason"])
        audit_record(
            action=action,
            target=profile,
            actor_label="delinquency run",
            changes={"blocked_reason": reason or ""},
        )
    return result


@dataclass(frozen=True)
class DailyResult:
    marked_overdue: int
    delinquency: DelinquencyResult


def delinquency_run(*, business_date: date) -> DailyResult:
    """The daily job: mark overdue installments, then update every late plan."""
    marked = installments_mark_overdue(business_date=business_date)
    return DailyResult(marked, plans_delinquency_update(business_date=business_date))
