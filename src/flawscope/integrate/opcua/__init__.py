"""OPC UA for the station (asyncua): the Machine Vision server, the tag handshake, client mode."""

from flawscope.integrate.opcua.client import OpcuaClientOptions, OpcuaClientSink
from flawscope.integrate.opcua.server import OpcuaServerOptions, OpcuaServerSink
from flawscope.integrate.opcua.vision import MV_URI, NODESET

__all__ = [
    "MV_URI",
    "NODESET",
    "OpcuaClientOptions",
    "OpcuaClientSink",
    "OpcuaServerOptions",
    "OpcuaServerSink",
]
