"""The gateway's rules, with no I/O: plain functions and dataclasses over plain values.

Flows fetch what a rule needs (repositories, adapters), call the rule and store its outcome; a
unit test calls the rule with values. Nothing here imports the rest of the gateway, a database
or HTTP client, storage or the settings: only ``shared`` (checked by import-linter).
"""
