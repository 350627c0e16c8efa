from django.apps import AppConfig


class RolloutConfig(AppConfig):
    name = "rollout"
    verbose_name = "Rollouts"

    def ready(self) -> None:
        # notifications and middleware connect the rollback notifications and the login time.
        from . import converters, middleware, notifications, preferences  # noqa: F401

        converters.register()
