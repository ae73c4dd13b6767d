"""
One module per resmon service, each a thin L{twisted.application.service.Service}
that wires its role's parts to the bus: L{agent} (the tracker: samples and
publishes measures), L{analyzer} (runs the analysis pipeline), L{liveness}
(judges which hosts are online) and L{web} (pushes to dashboards).
L{multiservice} composes them into the roles C{twistd resmon --role} starts.
"""
