"""AuditService: the query log and its proofs, for auditors."""

from __future__ import annotations

import grpc

from cleanroom.audit.log import AuditLog
from cleanroom.config import Role
from cleanroom.errors import InvalidArgumentError, PermissionDeniedError
from cleanroom.names import SERVER_LOG, CollaborationName
from cleanroom.paging import decode_token, next_page, page_size
from cleanroom.proofs.cosignature import WitnessVerifier
from cleanroom.proofs.signed_note import Checkpoint
from cleanroom.service import convert
from cleanroom.service.calls import AuditedCall, current_call
from cleanroom.usecases.access import AccessPolicy
from cleanroom.v1 import audit_service_pb2 as pb
from cleanroom.v1 import audit_service_pb2_grpc as pb_grpc

MAX_COSIGNATURE_CHARS = 1000


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Checks the caller, translates, reads the `AuditLog`, translates back."""

    def __init__(self, access: AccessPolicy, audit_log: AuditLog) -> None:
        self.access = access
        self.audit_log = audit_log

    def _log(self, call: AuditedCall, parent: str, *, witnessing: bool = False) -> str:
        """The log `parent` names, if the caller may read it: auditors' and administrators'.

        With `witnessing`, the collaboration's witnesses too (checkpoints and proofs only).
        """
        if parent == f"collaborations/{SERVER_LOG}":
            call.names(parent)
            partner = call.caller.known_partner()
            if not partner.administrator:
                raise PermissionDeniedError(
                    "ADMINISTRATOR_REQUIRED",
                    f"Partner {partner.id!r} may not read the server log: only administrators may.",
                    partner=partner.id,
                )
            return SERVER_LOG
        name = CollaborationName.parse(parent)
        call.names(name, collaboration=name)
        collaboration = self.access.collaboration(name)
        member = call.caller.partner
        if witnessing and collaboration and member and collaboration.witness_keys(member):
            return name.collaboration  # a witness reads checkpoints and their proofs
        self.access.require(call.caller, name, [Role.AUDITOR, Role.ADMIN], "read the query log")
        return name.collaboration

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
        log = self._log(call, request.parent)
        after = decode_token(request.page_token, "auditEvents", request.parent, -1)
        entries, token = next_page(
            self.audit_log.entries(log, where, after=after, limit=limit + 1),
            limit, "auditEvents", request.parent, lambda entry: entry[0],
        )  # fmt: skip
        return pb.ListAuditEventsResponse(
            audit_events=[convert.audit_event(index, entry, log) for index, entry in entries],
            next_page_token=token,
        )

    def GetAuditCheckpoint(  # noqa: N802 - gRPC's method name
        self, request: pb.GetAuditCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditCheckpointResponse:
        """Returns the latest signed checkpoint, or the one of a given size."""
        call = current_call()
        call.summarize(tree_size=request.tree_size)
        log = self._log(call, request.parent, witnessing=True)
        if request.tree_size < 0:
            raise InvalidArgumentError(
                "NEGATIVE_VALUE",
                f"`tree_size` must not be negative, got {request.tree_size}.",
                field="tree_size",
            )
        tree_size = request.tree_size or None
        note = self.audit_log.checkpoint(log, tree_size)
        checkpoint = Checkpoint.parse(note.partition("\n\n")[0] + "\n")
        return pb.GetAuditCheckpointResponse(
            signed_note=note,
            origin=checkpoint.origin,
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            cosigned_note=self.audit_log.cosigned_note(log, checkpoint.tree_size),
            witnessed_notes=self.audit_log.witnessed_notes(log),
        )

    def AddAuditCosignature(  # noqa: N802 - gRPC's method name
        self, request: pb.AddAuditCosignatureRequest, context: grpc.ServicerContext
    ) -> pb.AddAuditCosignatureResponse:
        """Stores a witness's cosignature of one checkpoint: auditors and brands witness."""
        call = current_call()
        call.summarize(tree_size=request.tree_size)
        name = CollaborationName.parse(request.parent)
        call.names(name, collaboration=name)
        collaboration = self.access.require(
            call.caller,
            name,
            [Role.AUDITOR, Role.ANALYST, Role.UPLOADER, Role.ADMIN],
            "witness the query log",
        )
        partner = call.caller.known_partner()
        keys = collaboration.witness_keys(partner)
        if not keys:
            raise PermissionDeniedError(
                "WITNESS_REQUIRED",
                f"Partner {partner.id!r} is no witness of {request.parent}: the operator names"
                " witnesses and their public keys in the collaboration's `witnesses`.",
                partner=partner.id,
            )
        if len(request.cosignature) > MAX_COSIGNATURE_CHARS:
            raise InvalidArgumentError(
                "COSIGNATURE_TOO_LONG",
                f"`cosignature` is {len(request.cosignature)} characters; one signature line"
                f" has at most {MAX_COSIGNATURE_CHARS}.",
                field="cosignature",
            )
        witnesses = [WitnessVerifier(key) for key in keys]
        note = self.audit_log.add_cosignature(
            name.collaboration, request.tree_size, request.cosignature, witnesses
        )
        return pb.AddAuditCosignatureResponse(cosigned_note=note)

    def GetAuditInclusionProof(  # noqa: N802 - gRPC's method name
        self, request: pb.GetAuditInclusionProofRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditInclusionProofResponse:
        """Returns the audit path of one event."""
        call = current_call()
        call.summarize(index=request.index, tree_size=request.tree_size)
        log = self._log(call, request.parent)
        proof = self.audit_log.inclusion_proof(log, request.index, request.tree_size)
        return pb.GetAuditInclusionProofResponse(hashes=proof)

    def GetAuditConsistencyProof(  # noqa: N802 - gRPC's method name
        self, request: pb.GetAuditConsistencyProofRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditConsistencyProofResponse:
        """Returns the proof that the log of the second size extends that of the first."""
        call = current_call()
        first, second = request.first_tree_size, request.second_tree_size
        call.summarize(first_tree_size=first, second_tree_size=second)
        log = self._log(call, request.parent, witnessing=True)
        proof = self.audit_log.consistency_proof(log, first, second)
        return pb.GetAuditConsistencyProofResponse(hashes=proof)
