"""AuditService: the query log, for auditors."""

from __future__ import annotations

import grpc

from cleanroom.access import AccessPolicy
from cleanroom.audit import AuditLog
from cleanroom.config import Role
from cleanroom.errors import PermissionDeniedError
from cleanroom.names import SERVER_LOG, CollaborationName
from cleanroom.paging import decode_token, next_page, page_size
from cleanroom.service import convert
from cleanroom.service.calls import current_call
from cleanroom.v1 import audit_service_pb2 as pb
from cleanroom.v1 import audit_service_pb2_grpc as pb_grpc


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Checks the caller, translates, reads the `AuditLog`, translates back."""

    def __init__(self, access: AccessPolicy, audit_log: AuditLog) -> None:
        self.access = access
        self.audit_log = audit_log

    def ListAuditEvents(  # noqa: N802 - gRPC's method name
        self, request: pb.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        """Lists a query log's events, oldest first, filtered and a page at a time."""
        call = current_call()
        limit = page_size(request.page_size, default=100)
        where = convert.audit_filter(request)
        call.summarize(
            page_size=limit,
            continued=bool(request.page_token),
            **{k: str(v) for k, v in vars(where).items() if v is not None},
        )
        if request.parent == f"collaborations/{SERVER_LOG}":
            call.names(request.parent)
            log = SERVER_LOG
            partner = call.caller.known_partner()
            if not partner.administrator:
                raise PermissionDeniedError(
                    "ADMINISTRATOR_REQUIRED",
                    f"Partner {partner.id!r} may not read the server log: only administrators may.",
                    partner=partner.id,
                )
        else:
            parent = CollaborationName.parse(request.parent)
            call.names(parent, collaboration=parent)
            self.access.require(
                call.caller, parent, [Role.AUDITOR, Role.ADMIN], "read the query log"
            )
            log = parent.collaboration
        after = decode_token(request.page_token, "auditEvents", request.parent, -1)
        events, token = next_page(
            self.audit_log.events(log, where, after=after, limit=limit + 1),
            limit, "auditEvents", request.parent, lambda event: event.index,
        )  # fmt: skip
        return pb.ListAuditEventsResponse(
            audit_events=[convert.audit_event(e) for e in events], next_page_token=token
        )
