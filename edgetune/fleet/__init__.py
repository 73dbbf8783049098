"""Federated fine-tuning on Flower: every device trains the same bundle under its own profile
and caps, and only the trainable parameters travel.

- ``edgetune.fleet.client:app`` / ``edgetune.fleet.server:app``: the Flower apps (need flwr,
  ``pip install 'edgetune[fleet]'``, Python >= 3.11);
- :mod:`edgetune.fleet.local`: a SuperLink and N SuperNodes on this machine, for trying it;
- :mod:`edgetune.fleet.project`: the Flower project folder for real devices (``flwr run``);
- the rest (config, schema, round, folder, wire) needs no flwr.

Importing this package imports no flwr: the device runtime works without it.
"""
