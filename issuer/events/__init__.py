"""Events to Amazon EventBridge, derived from the sealed audit trail (a transactional outbox).

The audit rows commit in the same transaction as what they record; the sealer orders them
(``audit_chain.seq``); the relay publishes them in that order from a cursor (``event_cursor``),
at least once, each with a deterministic ``detail.event_id``. :mod:`issuer.events.catalogue`
says which row becomes which event.
"""
