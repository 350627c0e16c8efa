from django.apps import AppConfig


class RolloutConfig(AppConfig):
    name = "rollout"
    verbose_name = "Rollouts"

    def ready(self) -> None:
        from . import middleware, notifications  # noqa: F401 - connect the rollback notifications, login time
