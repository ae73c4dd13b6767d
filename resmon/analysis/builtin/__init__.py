"""
resmon's built-in analyzers. They register through the C{resmon.analyzers}
entry-point group exactly as third-party analyzers do.
"""
