"""``python -m modelcycle_operator``: run kopf with the namespaces from the settings.

Equivalent to ``kopf run -m modelcycle_operator -n NS ...`` for each namespace in
``MODELCYCLE_NAMESPACES``, or ``--all-namespaces`` when it is empty. Extra kopf options
(liveness endpoint, peering, verbosity) need ``kopf run`` itself.
"""

from __future__ import annotations

import kopf

from modelcycle_operator import handlers


def main() -> None:
    settings = handlers.SETTINGS
    kopf.configure(verbose=False)
    kopf.run(clusterwide=settings.clusterwide, namespaces=list(settings.namespaces))


if __name__ == "__main__":
    main()
