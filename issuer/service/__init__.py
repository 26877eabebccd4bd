"""The use cases: the one issuance pipeline, each method's own steps, the CA issuer registry,
and the operator's use cases. Each owns its transactions; none speaks HTTP.
"""
