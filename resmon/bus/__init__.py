"""
The two implementations of L{resmon.interfaces.IBus}: RabbitMQ through
txAMQP (L{resmon.bus.amqp}) and in-process (L{resmon.bus.local}).
"""
