"""The operator's room: every operator action as one catalogue (:mod:`.catalogue`), run locally by the
``issuer`` command or through the admin API after an IAM sign-in (:mod:`.signin`), each with its
permission, its arguments (:mod:`.args`), its use case (:mod:`.operations`, :mod:`.fleet`,
:mod:`.access`, :mod:`.ca_actions`) and its audit row (:mod:`.audit`, the one writer)."""
