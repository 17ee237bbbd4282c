"""mvc: version control for machine-learning models.

The Python API starts at :class:`mvc.repo.Repo`. Importing this package is cheap: torch and
transformers are imported only inside the functions that touch tensor values.
"""

__version__ = "0.1.0"
