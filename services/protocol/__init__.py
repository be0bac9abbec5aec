"""The protocol layer (PROTOCOL.md), shared by the CEO (`ceo/`) and the role agents (`services/agents/`).

It imports neither of them: profiles and their prompts, the reply parsers (the CEO's decision included),
the model-calling helper, prompt context, answer extraction, and the tables of problem kinds and roles.
tests/test_layering.py keeps the direction of imports.
"""
