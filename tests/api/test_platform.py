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
def test_readyz_checks_database_and_broker(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"] == {"status": "ok", "vendor": connection.vendor}
    assert body["checks"]["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_broker(client, monkeypatch):
    from celery import current_app

    monkeypatch.setattr(current_app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "error"
