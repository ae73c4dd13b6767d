"""
resmon's own rules, registered as entry points of C{resmon.rules} like any
third party's.
"""
