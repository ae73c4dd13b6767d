"""
The agent role's parts: what runs on every monitored machine. The sampler
(L{resmon.agent.sampler}) reads the machine's resources with psutil; the
service that publishes them is L{resmon.services.agent}.
"""
