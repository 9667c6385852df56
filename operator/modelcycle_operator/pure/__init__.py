"""The pure layer: the spec model, manifest builders, conditions, the gate and the decision.

Also the trigger side of the loop: Alertmanager payloads (``alerts``), the built-in
monitor's verdict (``health``), pending triggers and the cooldown (``triggers``), and what
the trigger sources write into the status (``intake``).

Everything here is data in, data out: plain dicts and frozen dataclasses, the current time
passed in as an argument. No I/O, no clock, no Kubernetes client, no kopf (an import-linter
contract in ``pyproject.toml`` enforces the last two). That is what lets the unit tests walk
a whole model cycle without a cluster, and what makes a reconcile repeatable: the same
object and the same observed children always produce the same actions and status.
"""
