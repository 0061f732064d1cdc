"""flawscope.integrate: delivering committed results to the factory (PLC, MQTT, MES webhooks).

Every sink is a module registering itself in the sink registry (:mod:`flawscope.integrate.registry`);
importing this package registers the built-in ones. The station's forwarders
(:mod:`flawscope.integrate.outbox`) deliver from the audit log through each sink's durable cursor.
"""

from flawscope.integrate.mqtt import MqttOptions, MqttSink
from flawscope.integrate.opcua import OpcuaClientOptions, OpcuaClientSink, OpcuaServerOptions, OpcuaServerSink
from flawscope.integrate.registry import (
    SINKS,
    DeliveryError,
    RecordRefused,
    Sink,
    SinkContext,
    SinkDisabled,
    SinkSpec,
    make_sink,
    register_sink,
    registered_sinks,
)
from flawscope.integrate.webhook import WebhookOptions, WebhookSink

__all__ = [
    "SINKS",
    "DeliveryError",
    "MqttOptions",
    "MqttSink",
    "OpcuaClientOptions",
    "OpcuaClientSink",
    "OpcuaServerOptions",
    "OpcuaServerSink",
    "RecordRefused",
    "Sink",
    "SinkContext",
    "SinkDisabled",
    "SinkSpec",
    "WebhookOptions",
    "WebhookSink",
    "make_sink",
    "register_sink",
    "registered_sinks",
]
