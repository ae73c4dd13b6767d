"""
The two implementations of L{resmon.interfaces.IBus}: RabbitMQ through
txAMQP (L{resmon.bus.amqp.AMQPBus}) and in-process (L{resmon.bus.local}).

The RabbitMQ bus, by job: L{connection <resmon.bus.connection>} (connecting
and reconnecting), L{outbox <resmon.bus.outbox>} (publishing with publisher
confirms), L{topology <resmon.bus.topology>} (exchange, queues, bindings and
their periodic check), L{consumer <resmon.bus.consumer>} (subscriptions and
deliveries to handlers), L{workarounds <resmon.bus.workarounds>} (txAMQP and
Twisted fixed where they misbehave), L{properties <resmon.bus.properties>}
(bounded decoding of message properties); L{amqp <resmon.bus.amqp>}
composes them. Shared by both buses: L{delivery <resmon.bus.delivery>}
(handing a message to its handler) and L{counters <resmon.bus.counters>};
configuration: L{brokerurl <resmon.bus.brokerurl>}, L{tls <resmon.bus.tls>}.
"""
