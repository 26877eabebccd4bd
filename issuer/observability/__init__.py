"""What the service tells its operators about itself: Prometheus metrics, and the seams that feed them.

:mod:`issuer.observability.seams` holds the small protocols the service and the AWS
clients report through (no Prometheus import, so the core stays free of it);
:mod:`issuer.observability.metrics` implements them with ``prometheus_client``;
:mod:`issuer.observability.multiprocess` prepares ``issuer serve --workers N``.
This package's ``__init__`` imports nothing, so that importing a seam never imports
``prometheus_client`` (whose multi-process mode is chosen when it is first imported).
"""
