from django.apps import AppConfig


class CollectionsConfig(AppConfig):
    """Scheduled debits, retries, dunning, overdue marking.

    The package is ``collections_`` because ``collections`` is the standard library's;
    the label keeps tables, admin URLs and migrations saying "collections".
    """

    name = "collections_"
    label = "collections"
    verbose_name = "Collections"
