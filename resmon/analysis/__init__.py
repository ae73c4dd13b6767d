"""
The analyzer role's parts: the pipeline that runs every analyzer on a
measure (L{resmon.analysis.pipeline}), plugin discovery
(L{resmon.analysis.plugins}), the helpers analyzers are written with
(L{resmon.analysis.base}) and the built-in analyzers
(L{resmon.analysis.builtin}). The service that feeds them from the bus is
L{resmon.services.analyzer}.
"""
