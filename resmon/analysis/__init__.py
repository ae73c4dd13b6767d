"""
The analyzer role's parts: the pipeline that runs every analyzer on a
measure (L{resmon.analysis.pipeline}), plugin discovery
(L{resmon.analysis.plugins}), the helpers analyzers are written with
(L{resmon.analysis.base}), the built-in analyzers
(L{resmon.analysis.builtin}) and the host liveness judge
(L{resmon.analysis.liveness}). The services that feed them from the bus are
L{resmon.services.analyzer} and L{resmon.services.liveness}.
"""
