from django.apps import AppConfig


class RolloutConfig(AppConfig):
    name = "rollout"
    verbose_name = "Rollouts"

    def ready(self) -> None:
        from . import converters, notifications  # noqa: F401 - notifications connects the rollback notifications

        converters.register()
