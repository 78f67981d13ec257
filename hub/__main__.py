"""``python -m hub`` is the same as the ``channelhub`` command."""

from hub.cli import main

main()
