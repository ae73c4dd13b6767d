"""
A port resmon cannot listen on, said in one line naming the option that
changes it, instead of twistd's traceback.
"""

from twisted.internet.error import CannotListenError

from resmon.services.multiservice import OrderedMultiService


def cannotListen(error, options):
    """
    The line for C{error}, a L{CannotListenError}.

    @param options: the option that sets each port: C{{port: "--port"}}.
    """
    reason = error.socketError
    why = getattr(reason, "strerror", None) or str(reason)
    where = f"{error.interface}:{error.port}" if error.interface else f"port {error.port}"
    option = options.get(error.port)
    hint = f"; choose another port with {option}" if option else ""
    return f"cannot listen on {where}: {why}{hint}"


class ListeningService(OrderedMultiService):
    """
    An L{OrderedMultiService} whose children's ports are opened in
    L{privilegedStartService}: one that cannot be opened stops twistd
    before it runs, with exit status 1 and one line (L{cannotListen}).

    @param portOptions: C{{port number: option name}} for the line.
    @param program: how the command is called, for the line.
    """

    def __init__(self, portOptions, program="twistd resmon"):
        OrderedMultiService.__init__(self)
        self.portOptions = portOptions
        self.program = program

    def privilegedStartService(self):
        try:
            OrderedMultiService.privilegedStartService(self)
        except CannotListenError as e:
            raise SystemExit(f"{self.program}: error: {cannotListen(e, self.portOptions)}")
