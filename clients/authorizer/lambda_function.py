"""The Lambda entry point, ``lambda_function.lambda_handler``: this file sits at the deployment zip's root.

``make authorizer-zip`` copies it there beside the package (``clients/authorizer/``) and
``cryptography``; in this repository it is the same module inside the package.
"""

from __future__ import annotations

from clients.authorizer.handler import lambda_handler

__all__ = ["lambda_handler"]
