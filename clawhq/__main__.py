"""``python -m clawhq``: the same as the ``clawhq`` command."""

from clawhq.cli import app

app(prog_name="clawhq")
