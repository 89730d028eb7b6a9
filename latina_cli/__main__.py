"""``python -m latina_cli``: the ``latina`` command without the installed script."""

from latina_cli.cli import app

app()
