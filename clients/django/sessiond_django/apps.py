from django.apps import AppConfig


class SessiondConfig(AppConfig):
    """Optional: add "sessiond_django" to INSTALLED_APPS to give sessions their user at login."""

    name = "sessiond_django"
    verbose_name = "sessiond sessions"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in

        from .subjects import bind_subject_on_login

        user_logged_in.connect(bind_subject_on_login, dispatch_uid="sessiond_django.bind_subject_on_login")
