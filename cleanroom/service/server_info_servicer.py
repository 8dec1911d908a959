"""ServerInfoService: the server's limits, so that clients size their requests to fit."""

from __future__ import annotations

import grpc

from cleanroom.config import ServerConfig
from cleanroom.service import convert
from cleanroom.service.calls import current_call
from cleanroom.v1 import server_info_service_pb2 as pb
from cleanroom.v1 import server_info_service_pb2_grpc as pb_grpc


class ServerInfoServicer(pb_grpc.ServerInfoServiceServicer):
    """Tells any configured partner the limits the server refuses requests beyond."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def GetServerInfo(  # noqa: N802 - gRPC's method name
        self, request: pb.GetServerInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetServerInfoResponse:
        """Returns the limits; callers whose certificate names no partner are refused."""
        current_call().caller.known_partner()
        return pb.GetServerInfoResponse(limits=convert.server_limits(self.config))
