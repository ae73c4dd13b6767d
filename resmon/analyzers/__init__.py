"""
Compatibility import path for analyzer plugins written against resmon 0.1.

The built-in analyzers now live in L{resmon.analysis.builtin} and the
helpers in L{resmon.analysis.base}; C{resmon.analyzers.base} still offers
the same names, so third-party plugins keep working unchanged.
"""
