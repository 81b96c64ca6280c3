from django.core.management.base import BaseCommand

from payments.sandbox.server import SandboxServer


class Command(BaseCommand):
    help = "Run the payment sandbox (a local card processor; see payments/sandbox/server.py)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)

    def handle(self, *args, host: str, port: int, **options) -> None:
        server = SandboxServer((host, port))
        self.stdout.write(f"Payment sandbox on http://{host}:{port}/card/v1/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
