"""
One module per resmon service: tracker (agent), analyzer, web.
"""
