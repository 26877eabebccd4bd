"""The API Gateway Lambda authorizer: revocation and route policy for mutual-TLS client certificates.

Everything lives in :mod:`clients.authorizer.lambda_function`, which imports only the standard
library so that zipping that one file is the whole deployment.
"""
