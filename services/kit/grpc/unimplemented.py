"""Servicers for RPCs whose issue has not landed: every method answers UNIMPLEMENTED
with an ErrorInfo, so nothing pretends to work."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from kit.errors import NotImplementedYet
from kit.grpc.server import ServiceBinding, bind


def _refusing_servicer(servicer_base: type, full_name: str) -> Any:
    def refuse_method(method: str):
        async def refuse(self: Any, request: Any, context: Any) -> Any:
            raise NotImplementedYet(
                f"{full_name}/{method} is not implemented yet",
                reason="NOT_IMPLEMENTED",
                metadata={"method": f"{full_name}/{method}"},
            )

        return refuse

    methods = {
        name: refuse_method(name)
        for name in vars(servicer_base)
        if not name.startswith("_") and callable(getattr(servicer_base, name))
    }
    return type(f"Unimplemented{servicer_base.__name__}", (servicer_base,), methods)()


def unimplemented(grpc_module: ModuleType, service: str) -> ServiceBinding:
    """A binding of ``service`` (from a generated ``*_pb2_grpc`` module) that refuses every RPC."""
    full_name = bind(grpc_module, service, None).full_name
    servicer = _refusing_servicer(getattr(grpc_module, f"{service}Servicer"), full_name)
    return bind(grpc_module, service, servicer)
