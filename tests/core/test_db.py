"""The set-based writers of core.db, on PostgreSQL and on SQLite: order, defaults, limits."""

from __future__ import annotations

import pytest
from django.db import DataError, IntegrityError, transaction

from core import clock
from core.db import insert_rows, update_rows
from payments.models import PaymentTransaction, Provider, ProviderAccount

pytestmark = pytest.mark.django_db

FIELDS = ["account_id", "reference_type", "reference_id", "currency", "amount", "created_at"]


@pytest.fixture
def account():
    now = clock.now()
    return ProviderAccount.objects.create(
        provider=Provider.CARD, enabled=True, created_at=now, updated_at=now
    )


def rows(account, count, reference_type="test"):
    now = clock.now()
    return [(account.pk, reference_type, str(n), "EUR", 100 + n, now) for n in range(count)]


def test_insert_rows_returns_ids_in_the_order_given_and_fills_model_defaults(account):
    ids = insert_rows(PaymentTransaction, FIELDS, rows(account, 300))
    found = PaymentTransaction.objects.in_bulk(ids)
    assert [found[i].reference_id for i in ids] == [str(n) for n in range(300)]
    # As PaymentTransaction() gives them: flagged False, flag_reason blank.
    assert {(found[i].flagged, found[i].flag_reason) for i in ids} == {(False, "")}


@pytest.mark.postgres  # SQLite stores any length in a varchar column, as the ORM does there
def test_insert_rows_refuses_a_value_too_long_for_its_column_rather_than_cutting_it(account):
    with pytest.raises(DataError), transaction.atomic():
        insert_rows(PaymentTransaction, FIELDS, rows(account, 2, reference_type="t" * 101))
    assert not PaymentTransaction.objects.exists()


def test_update_rows_sets_each_row_its_own_values_and_any_lookup_finds_them(account):
    ids = insert_rows(PaymentTransaction, FIELDS, rows(account, 3))
    changed = update_rows(
        PaymentTransaction,
        ["provider_reference"],
        [(ids[0], "ch_a"), (ids[1], "ch_b")],
        only_if={"provider_reference": None},
    )
    again = update_rows(
        PaymentTransaction,
        ["provider_reference"],
        [(ids[0], "ch_z")],
        only_if={"provider_reference": None},
    )
    assert (changed, again) == (2, 0)
    found = PaymentTransaction.objects.filter(pk__any=ids).order_by("pk")
    assert [t.provider_reference for t in found] == ["ch_a", "ch_b", None]
    assert not PaymentTransaction.objects.filter(pk__any=[]).exists()


def test_values_travel_as_array_literals_exactly_as_given(account):
    awkward = ['a "quoted", {braced} \\ value', "NULL", "", "naïve ünïcode", None, "x" * 60]
    ids = insert_rows(
        PaymentTransaction,
        [*FIELDS, "provider_reference"],
        [
            (account.pk, "test", str(n), "EUR", 100 + n, clock.now(), value)
            for n, value in enumerate(awkward)
        ],
    )
    found = PaymentTransaction.objects.in_bulk(ids)
    assert [found[i].provider_reference for i in ids] == awkward
    assert sorted(
        PaymentTransaction.objects.filter(provider_reference__any=awkward).values_list(
            "reference_id", flat=True
        )
    ) == ["0", "1", "2", "3", "5"]  # NULL equals nothing


@pytest.mark.parametrize(
    "values",
    [
        ["NULL", "", "a b", "{braced}", "x,y", " ", "naïve"],  # nothing to escape
        ['a "quoted" one', "back\\slash", "plain"],  # every value quoted and escaped
    ],
)
def test_a_column_of_strings_travels_exactly_as_given(account, values):
    ids = insert_rows(
        PaymentTransaction,
        [*FIELDS, "provider_reference"],
        [(account.pk, "test", str(n), "EUR", 100, clock.now(), v) for n, v in enumerate(values)],
    )
    found = PaymentTransaction.objects.in_bulk(ids)
    assert [found[i].provider_reference for i in ids] == values
    assert PaymentTransaction.objects.filter(provider_reference__any=values).count() == len(values)


def test_a_row_of_the_wrong_width_is_refused(account):
    with pytest.raises(ValueError, match="each row needs 6 values"):
        insert_rows(PaymentTransaction, FIELDS, [(account.pk, "test", "1", "EUR", 100)])


def test_any_json_value_travels_as_json(account):
    from payments.models import PaymentEvent

    (txn_id,) = insert_rows(PaymentTransaction, FIELDS, rows(account, 1))
    values = [{"a": 'quoted "x"'}, "abc", "123", 7, True, [1, "two"]]  # None is SQL NULL
    insert_rows(
        PaymentEvent,
        [
            *("transaction_id", "kind", "outcome", "amount", "currency", "idempotency_key"),
            *("source", "detail", "created_at"),
        ],
        [
            (txn_id, "authorization", "requested", 1, "EUR", f"k{n}", "api", value, clock.now())
            for n, value in enumerate(values)
        ],
        returning=None,
    )
    stored = dict(
        PaymentEvent.objects.filter(transaction_id=txn_id).values_list("idempotency_key", "detail")
    )
    assert [stored[f"k{n}"] for n in range(len(values))] == values


EVENT_FIELDS = [
    *("transaction_id", "kind", "outcome", "amount", "currency", "idempotency_key"),
    *("source", "detail", "created_at"),
]


def event(txn_id, key, amount=100):
    return (txn_id, "authorization", "requested", amount, "EUR", key, "api", {}, clock.now())


def test_skip_conflicts_leaves_out_and_does_not_return_what_a_unique_constraint_refuses(account):
    from payments.models import PaymentEvent

    (txn_id,) = insert_rows(PaymentTransaction, FIELDS, rows(account, 1))
    insert_rows(PaymentEvent, EVENT_FIELDS, [event(txn_id, "k1")], returning=None)
    inserted = insert_rows(
        PaymentEvent,
        EVENT_FIELDS,
        [event(txn_id, "k1", 999), event(txn_id, "k2"), event(txn_id, "k2", 5)],
        returning=("transaction_id", "idempotency_key"),
        skip_conflicts=True,
    )
    assert inserted == [(txn_id, "k2")]  # the one on record and the repeat within the rows
    assert dict(
        PaymentEvent.objects.filter(transaction_id=txn_id).values_list("idempotency_key", "amount")
    ) == {"k1": 100, "k2": 100}


def test_skip_conflicts_still_refuses_a_row_that_breaks_a_check_constraint(account):
    from payments.models import PaymentEvent

    (txn_id,) = insert_rows(PaymentTransaction, FIELDS, rows(account, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows(PaymentEvent, EVENT_FIELDS, [event(txn_id, "k1", -1)], skip_conflicts=True)
    assert not PaymentEvent.objects.exists()


def test_returned_values_come_back_as_the_orm_reads_them(account):
    at = clock.now()
    (back,) = insert_rows(
        PaymentTransaction,
        FIELDS,
        [(account.pk, "test", "1", "EUR", 100, at)],
        returning=("id", "created_at", "flagged"),
    )
    txn = PaymentTransaction.objects.get()
    assert back == (txn.pk, at, False)
    assert (txn.created_at, txn.flagged) == (at, False)


@pytest.fixture
def few_parameters(monkeypatch):
    """SQLite's limit of parameters a statement as an older library has it (999), so the
    batching is exercised whatever this machine's library allows (250,000 here)."""
    from django.db import connection

    monkeypatch.setattr(connection.features, "max_query_params", 999, raising=False)


def test_many_rows_take_several_statements_where_parameters_are_limited(account, few_parameters):
    count = 1_000  # six columns a row: several statements on SQLite
    ids = insert_rows(PaymentTransaction, FIELDS, rows(account, count))
    assert len(set(ids)) == count
    found = dict(PaymentTransaction.objects.filter(pk__any=ids).values_list("pk", "reference_id"))
    assert [found[i] for i in ids] == [str(n) for n in range(count)]


def test_update_rows_adds_to_the_fields_named_in_add_and_keeps_to_only_if(account):
    ids = insert_rows(PaymentTransaction, FIELDS, rows(account, 3))  # amounts 100, 101, 102
    changed = update_rows(
        PaymentTransaction,
        ["amount", "flag_reason"],
        [(ids[0], 5, "a"), (ids[1], -1, "b"), (ids[2], 7, "c")],
        add=["amount"],
        only_if={"reference_id": ["0", "1"]},
    )
    assert changed == 2
    found = PaymentTransaction.objects.in_bulk(ids)
    assert [(found[i].amount, found[i].flag_reason) for i in ids] == [
        (105, "a"),
        (100, "b"),
        (102, ""),
    ]
    assert update_rows(PaymentTransaction, ["amount"], [(ids[0], 1)], only_if={"id": []}) == 0


def test_update_rows_sets_json_and_many_rows_past_the_parameter_limit(account, few_parameters):
    from collections_.models import CollectionsSettings

    count = 700  # two columns a row: over SQLite's 999 parameters a statement
    ids = insert_rows(PaymentTransaction, FIELDS, rows(account, count))
    assert update_rows(PaymentTransaction, ["amount"], [(i, 1) for i in ids]) == count
    assert set(PaymentTransaction.objects.values_list("amount", flat=True)) == {1}
    settings = CollectionsSettings.objects.create(pk=1)
    buckets = [{"name": 'a "quoted" one', "max_days": None}]
    assert update_rows(CollectionsSettings, ["buckets"], [(settings.pk, buckets)]) == 1
    assert CollectionsSettings.objects.get().buckets == buckets


@pytest.mark.django_db(transaction=True)
def test_several_statements_stand_or_fall_together(account, few_parameters):
    """Outside any transaction, a refused row in a later batch leaves nothing of the earlier
    ones (on SQLite several statements, on PostgreSQL one)."""
    good = rows(account, 600)
    bad = [(account.pk, "test", "bad", "EUR", 0, clock.now())]  # amount must be positive
    with pytest.raises(IntegrityError):
        insert_rows(PaymentTransaction, FIELDS, [*good, *bad])
    assert not PaymentTransaction.objects.exists()
    ids = insert_rows(PaymentTransaction, FIELDS, rows(account, 700))
    with pytest.raises(IntegrityError):
        update_rows(PaymentTransaction, ["amount"], [*((i, 5) for i in ids[:-1]), (ids[-1], 0)])
    assert set(PaymentTransaction.objects.values_list("amount", flat=True)) == set(range(100, 800))
