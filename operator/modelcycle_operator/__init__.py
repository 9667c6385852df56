"""ModelCycle: a kopf operator that runs the whole machine-learning cycle from one resource.

Layers (checked by import-linter, see ``pyproject.toml``):

- :mod:`modelcycle_operator.pure` — spec model, manifest builders, conditions, the gate and
  the decision; no I/O, no Kubernetes client, no kopf;
- :mod:`modelcycle_operator.api` — the only module that talks to the Kubernetes API;
- :mod:`modelcycle_operator.reconcile` — read, observe, decide, write status, act;
- :mod:`modelcycle_operator.handlers` — kopf decorators that all call the reconcile;
- :mod:`modelcycle_operator.receiver`, :mod:`modelcycle_operator.monitor`,
  :mod:`modelcycle_operator.schedule` — the trigger sources (Alertmanager's webhook, the
  built-in monitor, the cron schedule): each writes a pending trigger into the status
  through the reconcile's status path and wakes the reconcile, whose decision starts cycles;
- :mod:`modelcycle_operator.settings` — ``MODELCYCLE_*`` settings.

``kopf run -m modelcycle_operator --all-namespaces`` loads the handlers through this import.
"""

from modelcycle_operator import handlers as handlers
