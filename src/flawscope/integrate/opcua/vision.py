"""One camera as an OPC 40100-1 ``VisionSystemType`` object: its nodes and its state machine.

The object is instantiated from the official NodeSet (shipped beside this module, OPC Foundation
MIT License) under ``Objects`` with the string NodeId ``<camera>`` in the station's namespace, so
every child has a readable, stable NodeId (``top.VisionStateMachine.AutomaticModeStateMachine.
StartSingleJob``). Optional parts flawscope does not implement (configuration, recipe and safety
management, step models, result transfer, simulation mode) are removed rather than left answering
nothing. Two folders are added: ``<camera>.LatestResult.*`` (the last result as plain variables)
and ``<camera>.Handshake.*`` (the PLC tag handshake, :mod:`flawscope.integrate.opcua.handshake`).

States (``CurrentState`` with its ``Id`` pointing at the spec's state node and its ``Number``):
Preoperational (1), Halted (2), Error (3), Operational (4); inside Operational the automatic mode
machine's Initialized (5), Ready (6), SingleExecution (7), ContinuousExecution (8).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flawscope.integrate.opcua.handshake import TAGS

logger = logging.getLogger(__name__)


def _ua() -> Any:
    """Asyncua's ``ua`` module, untyped (its generated structures are made at run time)."""
    from asyncua import ua

    return ua


MV_URI = "http://opcfoundation.org/UA/MachineVision"
NODESET = Path(__file__).with_name("Opc.Ua.MachineVision.NodeSet2.xml")
#: NodeIds in the MachineVision namespace (Opc.Ua.MachineVision.NodeIds.csv).
VISION_SYSTEM_TYPE = 1003
RESULT_READY_EVENT_TYPE = 1024
#: Diagnostic information of a vision system (OPC 40100-1, 11.4.2): flawscope's drift events.
DIAGNOSTIC_INFO_EVENT_TYPE = 1037
MAIN_STATES = {"Preoperational": (5028, 1), "Halted": (5029, 2), "Error": (5030, 3), "Operational": (5031, 4)}
AUTO_STATES = {
    "Initialized": (5056, 5),
    "Ready": (5057, 6),
    "SingleExecution": (5058, 7),
    "ContinuousExecution": (5059, 8),
}
#: Optional parts of the spec flawscope implements, added to the mandatory ones: browse path of the
#: parent below the VisionSystem, browse name, type NodeId (MachineVision namespace).
OPTIONAL_OBJECTS = (
    ("", "ResultManagement", 1007),
    ("VisionStateMachine", "AutomaticModeStateMachine", 1021),
)
#: Methods a VisionSystem answers: browse path -> handler name on the server sink.
METHODS = {
    "VisionStateMachine/Halt": "halt",
    "VisionStateMachine/Reset": "reset",
    "VisionStateMachine/SelectModeAutomatic": "select_mode_automatic",
    "VisionStateMachine/AutomaticModeStateMachine/StartSingleJob": "start_single_job",
    "VisionStateMachine/AutomaticModeStateMachine/StartContinuous": "start_continuous",
    "VisionStateMachine/AutomaticModeStateMachine/Stop": "stop",
    "VisionStateMachine/AutomaticModeStateMachine/Abort": "abort",
    "ResultManagement/GetResultById": "get_result_by_id",
    "ResultManagement/GetResultComponentsById": "get_result_components_by_id",
    "ResultManagement/GetResultListFiltered": "get_result_list_filtered",
}
LATEST = (
    ("ResultId", "String", ""),
    ("ResultSeq", "Int64", 0),
    ("PartId", "String", ""),
    ("JobId", "String", ""),
    ("Outcome", "String", ""),
    ("OutcomeCode", "Int32", 0),
    ("Accept", "Boolean", False),
    ("Score", "Double", 0.0),
    ("NormalizedScore", "Double", 0.0),
    ("Category", "String", ""),
    ("ModelVersion", "String", ""),
    ("ThresholdVersion", "Int32", 0),
    ("CreationTime", "DateTime", None),
)


async def _unlinked(_parent: Any) -> list[Any]:
    """Placeholder until the server links the method to its handler."""
    return []


async def load_nodeset(server: Any) -> int:
    """Import the Machine Vision NodeSet into a server; returns its namespace index."""
    await server.import_xml(str(NODESET))
    return int(await server.get_namespace_index(MV_URI))


async def _child(node: Any, path: str, ns_of: dict[str, int]) -> Any:
    """The node at a ``/``-separated browse path (names in the MachineVision namespace)."""
    return await node.get_child([f"{ns_of['mv']}:{part}" for part in path.split("/")])


class VisionSystem:
    """The OPC UA object of one camera.

    Args:
        server: the asyncua server (NodeSet already imported).
        ns: the station's namespace index.
        mv: the MachineVision namespace index.
        camera: the camera's name (BrowseName and NodeId of the object).
    """

    def __init__(self, server: Any, ns: int, mv: int, camera: str) -> None:
        self.server = server
        self.ns = ns
        self.mv = mv
        self.camera = camera
        self.node: Any = None
        self.methods: dict[str, Any] = {}
        self.latest: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.main_state = "Preoperational"
        self.auto_state: str | None = None
        self._state_vars: dict[str, Any] = {}

    def nodeid(self, *parts: str) -> Any:
        """A string NodeId under this camera: ``<camera>.<part>.<part>``."""
        ua = _ua()

        return ua.NodeId(".".join((self.camera, *parts)), self.ns)

    async def build(self) -> None:
        """Instantiate the VisionSystemType with the parts flawscope implements, add the folders."""
        from asyncua.common.instantiate_util import instantiate

        ua = _ua()
        names = {"mv": self.mv}
        vision_type = self.server.get_node(ua.NodeId(VISION_SYSTEM_TYPE, self.mv))
        # Only the mandatory children, then the optional ones flawscope implements (instantiating
        # everything and deleting the rest costs seconds: asyncua deletes a node by scanning all).
        created = await instantiate(
            self.server.nodes.objects,
            vision_type,
            nodeid=self.nodeid(),
            bname=ua.QualifiedName(self.camera, self.ns),
            dname=ua.LocalizedText(self.camera),
            instantiate_optional=False,
        )
        self.node = created[0]
        for parent_path, name, type_id in OPTIONAL_OBJECTS:
            parent = await _child(self.node, parent_path, names) if parent_path else self.node
            parts = [p for p in (parent_path.replace("/", "."), name) if p]
            await instantiate(
                parent,
                self.server.get_node(ua.NodeId(type_id, self.mv)),
                nodeid=self.nodeid(*parts),
                bname=ua.QualifiedName(name, self.mv),
                dname=ua.LocalizedText(name),
                instantiate_optional=False,
            )
        machine = await _child(self.node, "VisionStateMachine", names)
        # SelectModeAutomatic is an optional method: added with the spec's browse name and arguments.
        await machine.add_method(
            self.nodeid("VisionStateMachine", "SelectModeAutomatic"),
            ua.QualifiedName("SelectModeAutomatic", self.mv),
            _unlinked,
            [],
            [ua.Argument(Name="Error", DataType=ua.NodeId(ua.ObjectIds.Int32), ValueRank=-1)],
        )
        for path, handler in METHODS.items():
            self.methods[handler] = await _child(self.node, path, names)
        auto = await _child(self.node, "VisionStateMachine/AutomaticModeStateMachine", names)
        for key, parent in (("main", machine), ("auto", auto)):
            state = await parent.get_child(["0:CurrentState"])
            self._state_vars[key] = state
            self._state_vars[f"{key}.id"] = await state.get_child(["0:Id"])
            try:
                self._state_vars[f"{key}.number"] = await state.get_child(["0:Number"])
            except ua.UaError:
                self._state_vars[f"{key}.number"] = None
        # The VisionSystem emits the ResultReady events: clients subscribe to events on it.
        await self.node.write_attribute(
            ua.AttributeIds.EventNotifier, ua.DataValue(ua.Variant(1, ua.VariantType.Byte))
        )
        self.latest = await self._folder("LatestResult", [(n, k, v, False) for n, k, v in LATEST])
        self.tags = await self._folder("Handshake", [(t.name, t.kind, t.initial, t.plc_writes) for t in TAGS])
        await self.set_state("Preoperational", None)

    async def _folder(self, name: str, variables: list[tuple[str, str, Any, bool]]) -> dict[str, Any]:
        ua = _ua()

        folder = await self.node.add_folder(self.nodeid(name), ua.QualifiedName(name, self.ns))
        out = {}
        for var_name, kind, initial, writable in variables:
            variant = ua.VariantType[kind]
            node = await folder.add_variable(
                self.nodeid(name, var_name), ua.QualifiedName(var_name, self.ns), initial, varianttype=variant
            )
            if writable:
                await node.set_writable()
            out[var_name] = node
        return out

    # ------------------------------------------------------------------------- state machine

    async def set_state(self, main: str, auto: str | None) -> None:
        """Enter a state (writes CurrentState, its Id and Number in both machines)."""
        ua = _ua()

        self.main_state, self.auto_state = main, auto if main == "Operational" else None
        for key, name, table in (
            ("main", self.main_state, MAIN_STATES),
            ("auto", self.auto_state, AUTO_STATES),
        ):
            if name is None:
                text, node_id, number = ua.LocalizedText(""), ua.NodeId(), None
            else:
                ident, number = table[name]
                text, node_id = ua.LocalizedText(name), ua.NodeId(ident, self.mv)
            await self._write(self._state_vars[key], ua.Variant(text, ua.VariantType.LocalizedText))
            await self._write(self._state_vars[f"{key}.id"], ua.Variant(node_id, ua.VariantType.NodeId))
            if self._state_vars[f"{key}.number"] is not None and number is not None:
                await self._write(
                    self._state_vars[f"{key}.number"], ua.Variant(number, ua.VariantType.UInt32)
                )
        logger.info("camera %s: %s%s", self.camera, main, f"/{auto}" if self.auto_state else "")

    async def _write(self, node: Any, variant: Any) -> None:
        ua = _ua()

        await self.server.write_attribute_value(node.nodeid, ua.DataValue(variant))

    async def write_values(self, nodes: dict[str, Any], values: dict[str, Any]) -> None:
        """Write plain values to variables of one of the folders (in the order given)."""
        ua = _ua()

        for name, value in values.items():
            kind = ua.VariantType[_kind(nodes, name)]
            await self.server.write_attribute_value(nodes[name].nodeid, ua.DataValue(ua.Variant(value, kind)))

    @property
    def state(self) -> str:
        """``Operational/Ready``, ``Halted``..."""
        return self.main_state + (f"/{self.auto_state}" if self.auto_state else "")


_KINDS = {**{t.name: t.kind for t in TAGS}, **{n: k for n, k, _ in LATEST}}


def _kind(_nodes: dict[str, Any], name: str) -> str:
    return _KINDS[name]
