"""Batch off-session charges: the card adapter against the sandbox's
``POST /card/v1/charges/batch``, over real HTTP, with the sandbox's charge log as witness."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core.money import Money
from payments.adapters.card import TIMEOUT, CardGateway, batch_timeout
from payments.gateway import Decision, GatewayTechnicalError, OffSessionCharge
from tests.collections.debit_helpers import charges_by_key, sandbox_charges


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


def gateway(sandbox: str) -> CardGateway:
    return CardGateway(base_url=f"{sandbox}/card", secret="sk_test")


def charge(key: str, payment_method: str = "pm_card", amount: str = "10.00") -> OffSessionCharge:
    return OffSessionCharge(
        amount=eur(amount),
        reference=f"inst-{key}",
        payment_method=payment_method,
        idempotency_key=key,
    )


def post_batch(sandbox: str, body: object, *, auth: bool = True) -> requests.Response:
    headers = {"Authorization": "Bearer sk_test"} if auth else {}
    return requests.post(f"{sandbox}/card/v1/charges/batch", json=body, headers=headers, timeout=5)


def item(key: str, **overrides: object) -> dict:
    return {
        "idempotency_key": key,
        "amount": 1000,
        "currency": "EUR",
        "reference": f"inst-{key}",
        "payment_method": "pm_card",
        "capture": True,
        "off_session": True,
    } | overrides


def without(body: dict, field: str) -> dict:
    return {k: v for k, v in body.items() if k != field}


def test_a_mixed_batch_maps_each_item_as_a_single_charge_would(sandbox):
    results = gateway(sandbox).charge_off_session_many(
        [
            charge("ok", amount="12.34"),
            charge("broke", "pm_decline"),
            charge("lost", "pm_lost"),
            charge("review", "pm_review"),
        ]
    )
    ok, broke, lost, review = results
    assert (ok.decision, ok.status, ok.captured) == (Decision.APPROVED, "captured", eur("12.34"))
    assert (broke.decision, broke.decline_code) == (Decision.DECLINED, "insufficient_funds")
    assert (lost.decision, lost.decline_code) == (Decision.DECLINED, "card_lost")
    assert (review.decision, review.status) == (Decision.PENDING, "pending_review")
    assert all(r.provider_reference for r in results)
    log = {c["idempotency_key"]: c for c in sandbox_charges(sandbox)}
    assert set(log) == {"ok", "broke", "lost", "review"}
    assert all(c["off_session"] and c["capture"] for c in log.values())
    assert log["ok"]["reference"] == "inst-ok"
    # An item's charge is the very dict a single charge answers with.
    single = gateway(sandbox).charge_off_session(
        amount=eur("1.00"), reference="r", payment_method="pm_card", idempotency_key="single"
    )
    assert set(single.raw) == set(ok.raw)


def test_a_key_replayed_across_single_and_batch_calls_charges_once(sandbox):
    card = gateway(sandbox)
    first = card.charge_off_session(
        amount=eur("10.00"), reference="inst-a", payment_method="pm_card", idempotency_key="a"
    )
    a, b = card.charge_off_session_many([charge("a"), charge("b")])
    assert a.provider_reference == first.provider_reference
    assert b.decision == Decision.APPROVED
    again = card.charge_off_session(
        amount=eur("10.00"), reference="inst-b", payment_method="pm_card", idempotency_key="b"
    )
    assert again.provider_reference == b.provider_reference
    [b_again] = card.charge_off_session_many([charge("b")])
    assert b_again.provider_reference == b.provider_reference
    assert charges_by_key(sandbox) == {"a": 1, "b": 1}


def test_an_item_the_processor_failed_on_succeeds_when_resent_with_its_key(sandbox):
    card = gateway(sandbox)
    batch = [charge("fine"), charge("flaky", "pm_error_once")]
    fine, flaky = card.charge_off_session_many(batch)
    assert fine.decision == Decision.APPROVED
    assert (flaky.decision, flaky.status) == (Decision.UNKNOWN, "provider_error")
    assert flaky.raw["status_code"] == 500
    assert charges_by_key(sandbox) == {"fine": 1}
    fine_again, flaky_again = card.charge_off_session_many(batch)
    assert fine_again.provider_reference == fine.provider_reference
    assert (flaky_again.decision, flaky_again.status) == (Decision.APPROVED, "captured")
    assert charges_by_key(sandbox) == {"fine": 1, "flaky": 1}


def test_a_batch_answer_that_comes_too_late_leaves_every_item_unknown(sandbox):
    card = gateway(sandbox)
    results = card.charge_off_session_many([charge("t-ok"), charge("t-slow", "pm_timeout")])
    assert [r.decision for r in results] == [Decision.UNKNOWN, Decision.UNKNOWN]
    assert charges_by_key(sandbox) == {"t-ok": 1, "t-slow": 1}  # both were made all the same
    # Asking by key finds them; sending again answers at once and charges nothing more.
    assert card.sync(idempotency_key="t-slow").decision == Decision.APPROVED
    again = card.charge_off_session_many([charge("t-ok"), charge("t-slow", "pm_timeout")])
    assert [r.decision for r in again] == [Decision.APPROVED, Decision.APPROVED]
    assert charges_by_key(sandbox) == {"t-ok": 1, "t-slow": 1}


def test_a_batch_that_never_arrived_leaves_every_item_unknown_and_unseen(sandbox):
    card = gateway(sandbox)
    results = card.charge_off_session_many([charge("u-ok"), charge("u-lost", "pm_unreachable")])
    assert [r.decision for r in results] == [Decision.UNKNOWN, Decision.UNKNOWN]
    assert charges_by_key(sandbox) == {}  # nothing was made
    assert card.sync(idempotency_key="u-ok") is None  # asking by key: never seen
    assert card.sync(idempotency_key="u-lost") is None


def test_a_malformed_batch_is_refused_whole_and_creates_nothing(sandbox):
    x, y = item("x"), item("y")
    refused = {
        "duplicate_idempotency_key": [{"charges": [x, y, item("x", amount=5)]}],
        "invalid_batch": [
            {"charges": []},
            {"charges": x},
            {},
            [x],
            {"charges": [x, "y"]},
            {"charges": [x, item("")]},
            {"charges": [x, without(y, "idempotency_key")]},
            {"charges": [x, without(y, "amount")]},
            {"charges": [x, item("y", amount="10.00")]},
            {"charges": [x, item("y", amount=True)]},
            {"charges": [x, without(y, "currency")]},
            {"charges": [x, item("y", currency="")]},
            {"charges": [item(f"k{i}") for i in range(5001)]},
        ],
    }
    for error, bodies in refused.items():
        for body in bodies:
            response = post_batch(sandbox, body)
            assert (response.status_code, response.json()) == (400, {"error": error}), body
    assert sandbox_charges(sandbox) == []


def test_a_refused_batch_leaves_its_keys_unseen(sandbox):
    refused = post_batch(sandbox, {"charges": [item("e", payment_method="pm_error_once"), {}]})
    assert refused.status_code == 400
    [answer] = post_batch(sandbox, {"charges": [item("e", payment_method="pm_error_once")]}).json()[
        "data"
    ]
    assert answer == {"idempotency_key": "e", "status_code": 500, "error": "internal"}


def test_the_largest_batch_is_accepted(sandbox):
    response = post_batch(sandbox, {"charges": [item(f"k{i}") for i in range(5000)]})
    assert response.status_code == 200
    data = response.json()["data"]
    assert [d["idempotency_key"] for d in data] == [f"k{i}" for i in range(5000)]
    assert {d["status_code"] for d in data} == {201}
    assert len(sandbox_charges(sandbox)) == 5000


def test_a_batch_without_credentials_is_refused(sandbox):
    response = post_batch(sandbox, {"charges": [item("x")]}, auth=False)
    assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})
    assert sandbox_charges(sandbox) == []


def test_the_adapter_raises_when_the_processor_refuses_the_batch(sandbox):
    with pytest.raises(GatewayTechnicalError, match="duplicate_idempotency_key"):
        gateway(sandbox).charge_off_session_many([charge("d"), charge("d")])
    assert sandbox_charges(sandbox) == []


def test_the_adapter_raises_when_the_processor_is_unreachable():
    card = CardGateway(base_url="http://127.0.0.1:9/card", secret="sk_test")
    with pytest.raises(GatewayTechnicalError):
        card.charge_off_session_many([charge("x")])


def test_no_charges_make_no_request():
    card = CardGateway(base_url="http://127.0.0.1:9/card", secret="sk_test")  # nothing there
    assert card.charge_off_session_many([]) == []


def test_a_batch_gets_more_read_time_the_larger_it_is():
    assert batch_timeout(0) == TIMEOUT
    assert batch_timeout(1000) == (TIMEOUT[0], TIMEOUT[1] + 5.0)


def test_concurrent_batches_and_singles_with_overlapping_keys_charge_each_key_once(sandbox):
    keys = [f"k{i}" for i in range(60)]
    start = threading.Barrier(8)

    def send(worker: int) -> dict[str, str]:
        card = gateway(sandbox)
        mine = random.Random(worker).sample(keys, 40)  # each thread its own order
        start.wait()
        if worker % 4 == 3:  # some send the keys one by one, as the single call does
            results = [
                card.charge_off_session(
                    amount=eur("10.00"),
                    reference=f"inst-{key}",
                    payment_method="pm_card",
                    idempotency_key=key,
                )
                for key in mine[:10]
            ]
            mine = mine[:10]
        else:
            results = card.charge_off_session_many([charge(key) for key in mine])
        assert all(r.decision == Decision.APPROVED for r in results)
        return dict(zip(mine, (r.provider_reference for r in results), strict=True))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    references: dict[str, set[str]] = {}
    for answer in answers:
        for key, reference in answer.items():
            references.setdefault(key, set()).add(reference)
    assert all(len(refs) == 1 for refs in references.values())  # one charge id per key
    counts = charges_by_key(sandbox)
    assert set(counts) == set(references)
    assert set(counts.values()) == {1}
