"""
The rules role's parts: discovery.py finds rule plugins (entry points of
C{resmon.rules} and C{--rules-dir}, with the analyzers' machinery), act.py is
what an action may do, engine.py runs every matching rule on an event,
isolated, and builtin/ holds the C{alert} rule.
"""
