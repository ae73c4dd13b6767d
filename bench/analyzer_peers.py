"""
The peers bench/analyzer_throughput.py runs beside the real analyzer: minimal
consumers doing the least an analyzer does with a measure (decode its JSON,
judge its CPU against a threshold, publish a small JSON analysis, acknowledge
the measure), written the way each library's documentation teaches.

 - C{txamqp}: the naive txAMQP consumer: C{yield queue.get()} in an
   C{inlineCallbacks} loop, one C{basic_ack} per message, no publisher
   confirms.
 - C{pika}: a pika C{SelectConnection} consumer, its callbacks on pika's own
   I/O loop, one C{basic_ack} per message, no publisher confirms.

Neither validates the measure, keeps per-host state, de-duplicates or waits
for a confirm before acknowledging: they are the floor of what consuming and
publishing cost with each library.

Usage: python bench/analyzer_peers.py txamqp|pika BROKER-URL EXCHANGE QUEUE PREFETCH
"""

import json
import os
import sys
from urllib.parse import unquote, urlparse

SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resmon", "bus",
                         "amqp0-9-1.stripped.extended.xml")
THRESHOLD = 90.0


def analyse(routingKey, body):
    """
    The minimal work: JSON in, a threshold, JSON out.

    @return: C{(routing key, body)} of the analysis to publish.
    """
    measure = json.loads(body)
    cpu = measure["metrics"]["cpu"]["percent"]
    analysis = {"host": measure["host"], "seq": measure["seq"], "ts": measure["ts"],
                "level": "critical" if cpu > THRESHOLD else "ok", "cpu": cpu}
    return routingKey.rsplit(".", 1)[0] + ".analysis", json.dumps(analysis).encode()


def naiveTxAMQP(url, exchange, queue, prefetch):
    from twisted.internet import defer, reactor
    from twisted.internet.protocol import ClientCreator
    from txamqp.client import TwistedDelegate
    from txamqp.content import Content
    from txamqp.protocol import AMQClient
    from txamqp.spec import load

    parsed = urlparse(url)

    @defer.inlineCallbacks
    def run():
        spec = load(SPEC_PATH)
        vhost = unquote(parsed.path[1:]) or "/"
        client = yield ClientCreator(reactor, AMQClient, delegate=TwistedDelegate(),
                                     vhost=vhost, spec=spec).connectTCP(parsed.hostname,
                                                                        parsed.port or 5672)
        yield client.authenticate(unquote(parsed.username), unquote(parsed.password))
        channel = yield client.channel(1)
        yield channel.channel_open()
        yield channel.basic_qos(prefetch_count=prefetch)
        reply = yield channel.basic_consume(queue=queue)
        messages = yield client.queue(reply.consumer_tag)
        while True:
            message = yield messages.get()
            routingKey, body = analyse(message.routing_key, message.content.body)
            channel.basic_publish(exchange=exchange, routing_key=routingKey, content=Content(body))
            channel.basic_ack(delivery_tag=message.delivery_tag)

    run().addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


def pikaSelect(url, exchange, queue, prefetch):
    import pika

    def onMessage(channel, method, properties, body):
        routingKey, analysis = analyse(method.routing_key, body)
        channel.basic_publish(exchange, routingKey, analysis)
        channel.basic_ack(method.delivery_tag)

    def onChannel(channel):
        channel.basic_qos(prefetch_count=prefetch,
                          callback=lambda _: channel.basic_consume(queue, onMessage))

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda connection: connection.channel(on_open_callback=onChannel))
    connection.ioloop.start()


if __name__ == "__main__":
    kind, url, exchange, queue, prefetch = sys.argv[1:]
    {"txamqp": naiveTxAMQP, "pika": pikaSelect}[kind](url, exchange, queue, int(prefetch))
