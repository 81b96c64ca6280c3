"""Parallel password guesses are counted before any password is checked (issue 12 #7)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import make_customer

PASSWORD = "correct-horse-battery"


@pytest.mark.django_db(transaction=True)
def test_parallel_guesses_check_at_most_the_limit_of_passwords(
    concurrently, shared_cache, settings
):
    # The real hasher, as in production: each password check takes a noticeable while, so
    # guesses that are all let through before any of them is counted would show.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    make_customer(email="erin@example.com", password=PASSWORD)
    guesses = 12

    def guess(i: int) -> int:
        return (
            APIClient()
            .post(
                "/api/v1/auth/token",
                {"email": "erin@example.com", "password": f"guess-{i}"},
                format="json",
                REMOTE_ADDR="203.0.113.9",
            )
            .status_code
        )

    answers = sorted(concurrently(guesses, guess))

    limit = settings.LOGIN_FAILURES_PER_ACCOUNT
    assert answers == [400] * limit + [429] * (guesses - limit)
