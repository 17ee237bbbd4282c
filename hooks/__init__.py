"""Extension points: git-style hook scripts in ``.mvc/hooks/`` (see ``hooks.scripts``)."""
