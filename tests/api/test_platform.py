import pytest
import yaml
from django.core.management import call_command
from django.db import connection


@pytest.mark.django_db
def test_openapi_schema_documents_every_operations_errors(tmp_path):
    path = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    schema = yaml.safe_load(path.read_text())
    for route, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = {c for c in operation["responses"] if c.startswith("4")}
            assert codes, f"{method.upper()} {route} documents no 4xx answer"
            for code in codes:
                ref = operation["responses"][code]["content"]["application/json"]["schema"]
                assert ref == {"$ref": "#/components/schemas/Error"}, (route, method, code)


@pytest.mark.django_db
def test_docs_page_serves_swagger_ui_from_the_sidecar(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"drf_spectacular_sidecar/swagger-ui-dist" in page.content


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_broker(admin_client):
    response = admin_client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"] == {"status": "ok", "vendor": connection.vendor}
    assert body["checks"]["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_broker(admin_client, monkeypatch):
    from celery import current_app

    monkeypatch.setattr(current_app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    response = admin_client.get("/readyz")
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["status"] == "error"
    assert "127.0.0.1:1" in broker["detail"]  # staff see the error itself


@pytest.fixture
def failing_checks(monkeypatch):
    """The broker unreachable and a gating check failing, with text naming hosts and users."""
    from celery import current_app

    from core import readiness

    monkeypatch.setattr(current_app.conf, "broker_write_url", "redis://ops:hunter2@127.0.0.1:1/0")

    def search_index() -> dict:
        raise RuntimeError('connection to server at "db.internal" failed for user "oms"')

    readiness.register("search_index", search_index, gating=True)
    yield
    readiness._checks.pop("search_index")


@pytest.mark.django_db
def test_readyz_names_the_failed_checks_but_no_error_text_to_anonymous_callers(
    client, failing_checks
):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "checks": {
            "database": {"status": "ok"},
            "broker": {"status": "error"},
            "payment_providers": {"status": "ok"},
            "search_index": {"status": "error"},
        },
    }
    for secret in (b"127.0.0.1", b"hunter2", b"db.internal", b"oms", b"postgresql"):
        assert secret not in response.content


@pytest.mark.django_db
def test_readyz_shows_error_text_to_staff_only(
    client, admin_client, django_user_model, failing_checks
):
    customer = django_user_model.objects.create_user("cust", "c@example.com", "x")
    client.force_login(customer)
    assert b"db.internal" not in client.get("/readyz").content
    staff = admin_client.get("/readyz").json()["checks"]
    assert "db.internal" in staff["search_index"]["detail"]
    assert "127.0.0.1:1" in staff["broker"]["detail"]
