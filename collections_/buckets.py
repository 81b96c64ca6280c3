"""Delinquency buckets: parsed and validated from ``CollectionsSettings.buckets``."""

from __future__ import annotations

from dataclasses import dataclass

from collections_.models import BucketAction


@dataclass(frozen=True)
class Bucket:
    """Plans whose worst installment is ``min_days``..``max_days`` days past due."""

    name: str
    min_days: int
    max_days: int | None  # None: no upper end
    actions: tuple[str, ...]

    def holds(self, days: int) -> bool:
        return days >= self.min_days and (self.max_days is None or days <= self.max_days)


def buckets_parse(raw: list[dict]) -> list[Bucket]:
    """Validate the settings' bucket list; raise ValueError naming what is wrong.

    Buckets are ordered by ``min_days``, start at 1 day, follow each other without gap or
    overlap, the last one (only) is open-ended so every late plan has a bucket, and they
    name only known actions. An empty list turns buckets (and their actions) off.
    """
    known = set(BucketAction.values)
    buckets = []
    for item in raw:
        try:
            bucket = Bucket(
                name=str(item["name"]),
                min_days=int(item["min_days"]),
                max_days=None if item.get("max_days") is None else int(item["max_days"]),
                actions=tuple(item.get("actions", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bucket {item!r}: needs name, min_days, max_days, actions") from exc
        if not bucket.name or len(bucket.name) > 20:
            raise ValueError(f"bucket name {bucket.name!r} must be 1 to 20 characters")
        unknown = set(bucket.actions) - known
        if unknown:
            raise ValueError(f"bucket {bucket.name}: unknown action(s) {sorted(unknown)}")
        buckets.append(bucket)
    buckets.sort(key=lambda b: b.min_days)
    expected = 1
    for i, bucket in enumerate(buckets):
        if bucket.min_days != expected:
            raise ValueError(f"bucket {bucket.name} must start at {expected} days")
        if bucket.max_days is None:
            if i != len(buckets) - 1:
                raise ValueError(f"only the last bucket may be open-ended, not {bucket.name}")
        elif bucket.max_days < bucket.min_days:
            raise ValueError(f"bucket {bucket.name} ends before it starts")
        else:
            expected = bucket.max_days + 1
    if buckets and buckets[-1].max_days is not None:
        raise ValueError(f"the last bucket ({buckets[-1].name}) must be open-ended (no max_days)")
    if len({b.name for b in buckets}) != len(buckets):
        raise ValueError("bucket names must be unique")
    return buckets


def bucket_for(days: int, buckets: list[Bucket]) -> Bucket | None:
    """The bucket ``days`` past due falls in; None when current (0 days)."""
    return next((b for b in buckets if b.holds(days)), None)
