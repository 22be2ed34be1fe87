"""Strategy tests build Flower Messages: every test gets a run identity (:mod:`flower_fakes`)."""

from flower_fakes import task_identity  # noqa: F401
