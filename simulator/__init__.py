"""A Coincall-compatible exchange simulator spoken to over real HTTP on 127.0.0.1.

Backtests may reach it in-process instead (``inprocess_session_factory``): the same
request pipeline and bytes, without the socket (``simulator/inprocess.py``).

Public names are resolved lazily (PEP 562): importing a submodule such as
``simulator.routes`` or ``simulator.errors`` must not drag in the whole exchange
model, and the models' own imports of ``simulator.*`` must never meet a half-built
package.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "FaultPlan",
    "FaultRule",
    "InProcessAdapter",
    "Mutation",
    "MutationPlan",
    "ServerConfig",
    "SimulatorConfig",
    "SimulatorHandle",
    "inprocess_session_factory",
    "start_simulator",
]

_EXPORTS: dict[str, str] = {
    "FaultPlan": "simulator.faults",
    "FaultRule": "simulator.faults",
    "InProcessAdapter": "simulator.inprocess",
    "Mutation": "simulator.mutations",
    "MutationPlan": "simulator.mutations",
    "ServerConfig": "simulator.config",
    "SimulatorConfig": "simulator.config",
    "SimulatorHandle": "simulator.server",
    "inprocess_session_factory": "simulator.inprocess",
    "start_simulator": "simulator.server",
}

if TYPE_CHECKING:
    from simulator.config import ServerConfig, SimulatorConfig
    from simulator.faults import FaultPlan, FaultRule
    from simulator.inprocess import InProcessAdapter, inprocess_session_factory
    from simulator.mutations import Mutation, MutationPlan
    from simulator.server import SimulatorHandle, start_simulator


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
