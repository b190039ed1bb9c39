"""greetproxy: a greet-pause SMTP front proxy for sendmail."""

__version__ = "0.1.0"
