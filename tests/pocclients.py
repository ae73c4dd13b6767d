"""
Small stand-ins for the three modules of the proof of concept resmon grew
from, written from its description (issue 11), each on pika in a thread of
its own, as the proof of concept's modules are separate pika programs:

 - every module declares the topic exchange non-durable on start and stops
   (L{PocModule.error}) on C{PRECONDITION_FAILED};
 - the tracker publishes C{{"cpu_percentage": <float>}} under
   C{<hostname>.measure};
 - the analyzer consumes C{*.measure} from an exclusive auto-named queue,
   reads C{cpu_percentage} (a measure without it crashes it: L{PocModule.error}),
   publishes C{{"cpu_result": LOW|MEDIUM|HIGH}} (thresholds 25 and 75) under
   C{<hostname>.analysis};
 - the web consumes C{*.analysis} from an exclusive auto-delete queue and
   hands each analysis on with the machine name from the routing key.
"""

import json
import threading
import time
import uuid

import pika
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater


def pocLevel(percentage):
    """
    The proof of concept's CPU level.
    """
    if percentage < 25:
        return "LOW"
    if percentage < 75:
        return "MEDIUM"
    return "HIGH"


class PocModule(threading.Thread):
    """
    One proof-of-concept module: connects, declares the exchange as the
    proof of concept does, sets up, then loops until L{stop}.

    @ivar error: what stopped the module on its own (the broker's refusal
        of its exchange declaration, a crash on a message), or L{None}.
    """

    def __init__(self, url, exchange):
        threading.Thread.__init__(self, daemon=True, name=f"{type(self).__name__}-{exchange}")
        self.url = url
        self.exchange = exchange
        self.error = None
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self.done = threading.Event()

    def run(self):
        connection = None
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = connection.channel()
            channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=False)
            self.setUp(channel)
            self.ready.set()
            while not self._stopping.is_set():
                self.step(channel)
                connection.process_data_events(time_limit=0.05)
        except Exception as e:
            self.error = e
        finally:
            self.ready.set()
            try:
                if connection is not None and connection.is_open:
                    connection.close()
            except Exception:
                pass
            self.done.set()

    def setUp(self, channel):
        pass

    def step(self, channel):
        pass

    def stop(self):
        self._stopping.set()
        self.join(10)

    @defer.inlineCallbacks
    def started(self, timeout=10):
        """
        Fire once the module is set up (or failed to be).
        """
        self.start()
        yield waitUntil(self.ready.is_set, timeout, f"{self.name} to start")
        return self


class PocTracker(PocModule):
    """
    Publishes C{{"cpu_percentage": cpu}} under C{<machine>.measure} every
    C{interval} seconds (the proof of concept: every ~1.5 s).
    """

    def __init__(self, url, exchange, machine, cpu, interval=0.2):
        PocModule.__init__(self, url, exchange)
        self.machine = machine
        self.cpu = cpu
        self.interval = interval
        self.published = 0
        self._next = 0

    def step(self, channel):
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval
            channel.basic_publish(exchange=self.exchange, routing_key=f"{self.machine}.measure",
                                  body=json.dumps({"cpu_percentage": self.cpu}))
            self.published += 1


class PocAnalyzer(PocModule):
    """
    Analyses every C{*.measure}; records what it received and published.
    """

    def __init__(self, url, exchange):
        PocModule.__init__(self, url, exchange)
        self.received = []  # (routing key, decoded body)
        self.published = []  # (machine, level)

    def setUp(self, channel):
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(exchange=self.exchange, queue=queue, routing_key="*.measure")
        channel.basic_consume(queue=queue, on_message_callback=self.measure, auto_ack=True)

    def measure(self, channel, method, properties, body):
        machine = method.routing_key.split(".")[0]
        document = json.loads(body.decode("utf-8"))
        self.received.append((method.routing_key, document))
        level = pocLevel(document["cpu_percentage"])  # KeyError: the module dies, as the PoC's
        channel.basic_publish(exchange=self.exchange, routing_key=f"{machine}.analysis",
                              body=json.dumps({"cpu_result": level}))
        self.published.append((machine, level))


class PocWeb(PocModule):
    """
    One browser's queue: every C{*.analysis}, with its C{machine}, in
    L{received}.
    """

    def __init__(self, url, exchange):
        PocModule.__init__(self, url, exchange)
        self.received = []

    def setUp(self, channel):
        queue = f"poc-web__{uuid.uuid4()}"
        channel.queue_declare(queue=queue, durable=False, exclusive=True, auto_delete=True)
        channel.queue_bind(exchange=self.exchange, queue=queue, routing_key="*.analysis")
        channel.basic_consume(queue=queue, on_message_callback=self.analysis, auto_ack=True)

    def analysis(self, channel, method, properties, body):
        data = json.loads(body.decode("utf-8"))
        data["machine"] = method.routing_key.split(".")[0]
        self.received.append(data)


class Recorder(PocModule):
    """
    Not a proof-of-concept module: any other consumer of the exchange, bound
    to C{pattern} (C{#}: everything), recording C{(routing key, body)}.
    """

    def __init__(self, url, exchange, pattern="#"):
        PocModule.__init__(self, url, exchange)
        self.pattern = pattern
        self.received = []

    def setUp(self, channel):
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(exchange=self.exchange, queue=queue, routing_key=self.pattern)
        channel.basic_consume(queue=queue, auto_ack=True, on_message_callback=lambda ch, method, p, body:
                              self.received.append((method.routing_key, body)))


def deleteExchange(url, exchange):
    """
    Delete C{exchange} (test clean-up), with a blocking pika connection.
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().exchange_delete(exchange=exchange)
    finally:
        connection.close()


def declareExchange(url, exchange, exchangeType, durable):
    """
    Declare C{exchange} as some other program would have.
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().exchange_declare(
            exchange=exchange, exchange_type=exchangeType, durable=durable)
    finally:
        connection.close()


@defer.inlineCallbacks
def waitUntil(predicate, timeout, what, step=0.05):
    """
    Poll C{predicate} from the reactor until it is true; fail after
    C{timeout} seconds saying C{what} was awaited.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield deferLater(reactor, step, lambda: None)
