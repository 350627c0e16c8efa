from django.apps import AppConfig


class RolloutConfig(AppConfig):
    name = "rollout"
    verbose_name = "Rollouts"

    def ready(self) -> None:
        from . import notifications  # noqa: F401 - connects the rollback notifications
