"""Server reflection: the stock grpcio-reflection servicer, plus method symbols.

grpcio-reflection answers `file_containing_symbol` with the descriptor pool's
FindFileContainingSymbol, which (with the upb backend) does not know methods, so
`grpcurl describe pkg.Service.Method` fails with "Symbol not found"
(grpc/grpc#34743). A method's symbol is resolved here to its service's file;
everything else is the stock servicer's.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

SERVICE_NAME = reflection.SERVICE_NAME


class ReflectionServicer(reflection.aio.ReflectionServicer):
    """grpcio-reflection's asyncio servicer that also finds `pkg.Service.Method`."""

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        found: reflection_pb2.ServerReflectionResponse = super()._file_containing_symbol(
            request, fully_qualified_name
        )
        if found.HasField("error_response"):
            filename = self._method_filename(fully_qualified_name)
            if filename is not None:
                return self._file_by_filename(request, filename)
        return found

    def _method_filename(self, name: str) -> str | None:
        """The file of the service that has `name` (`pkg.Service.Method`) as a method."""
        service_name, _, method = name.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return None
        return str(service.file.name) if method in service.methods_by_name else None


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for these services (and reflection itself) on `server`."""
    names = [*service_names, SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionServicer(names), server)
