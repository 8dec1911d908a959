"""ReportService: overlap reports, for brands' marketers."""

from __future__ import annotations

import dataclasses

import grpc

from cleanroom.matching.engine import cancellable
from cleanroom.names import CollaborationName, OverlapReportName, privacy_budget_collaboration
from cleanroom.paging import decode_token, next_page, page_size
from cleanroom.privacy.report import OverlapReport
from cleanroom.service import convert
from cleanroom.service.calls import current_call
from cleanroom.usecases.reports import Reports
from cleanroom.v1 import overlap_report_pb2
from cleanroom.v1 import report_service_pb2 as pb
from cleanroom.v1 import report_service_pb2_grpc as pb_grpc


class ReportServicer(pb_grpc.ReportServiceServicer):
    """Checks the caller, translates, calls `Reports`, translates back."""

    def __init__(self, reports: Reports) -> None:
        self.reports = reports

    def _api(self, report: OverlapReport) -> overlap_report_pb2.OverlapReport:
        return convert.overlap_report(report, self.reports.deleted_inputs(report))

    def CreateOverlapReport(  # noqa: N802 - gRPC's method name
        self, request: pb.CreateOverlapReportRequest, context: grpc.ServicerContext
    ) -> pb.CreateOverlapReportResponse:
        """Computes and releases a report of the caller's base dataset."""
        call = current_call()
        parent = CollaborationName.parse(request.parent)
        call.names(parent, collaboration=parent)
        asked = request.overlap_report
        call.summarize(
            base_dataset=asked.base_dataset,
            other_datasets=list(asked.other_datasets),
            segment_column=asked.segment_column,
        )
        question = convert.overlap_question(parent, asked)
        call.names(*question.datasets)
        if request.validate_only:
            call.summarize(validate_only=True)
            estimate = self.reports.estimate(call.caller, parent, question)
            return pb.CreateOverlapReportResponse(
                estimate=convert.report_estimate(estimate), reused=estimate.reused
            )
        with cancellable() as cancellation:
            # Called when the call ends, also when the client cancels it or its deadline
            # passes: an engine that can stop (a Spark job) stops then.
            context.add_callback(cancellation.cancel)
            answer = self.reports.create(call.caller, parent, question)
        report = answer.report
        call.names(report.name)
        outcome = call.event.outcome
        outcome.released_count = report.released_count
        outcome.suppressed_count = report.suppressed_count
        outcome.epsilon_spent = answer.epsilon_spent
        call.summarize(reused_stored_report=answer.reused)
        collaboration = self.reports.access.collaboration(parent)
        if collaboration is not None:  # the policy of this release, for auditors to check
            call.summarize(policy=dataclasses.asdict(collaboration.policy))
        return pb.CreateOverlapReportResponse(
            overlap_report=self._api(report), reused=answer.reused
        )

    def GetOverlapReport(  # noqa: N802 - gRPC's method name
        self, request: pb.GetOverlapReportRequest, context: grpc.ServicerContext
    ) -> pb.GetOverlapReportResponse:
        """Returns a report released earlier to the caller's brand."""
        call = current_call()
        name = OverlapReportName.parse(request.name)
        call.names(name, collaboration=name.parent)
        report = self.reports.get(call.caller, name)
        return pb.GetOverlapReportResponse(overlap_report=self._api(report))

    def ListOverlapReports(  # noqa: N802 - gRPC's method name
        self, request: pb.ListOverlapReportsRequest, context: grpc.ServicerContext
    ) -> pb.ListOverlapReportsResponse:
        """Lists the reports released to the caller's brand, oldest first."""
        call = current_call()
        parent = CollaborationName.parse(request.parent)
        call.names(parent, collaboration=parent)
        limit = page_size(request.page_size, default=50)
        call.summarize(page_size=limit, continued=bool(request.page_token))
        after = decode_token(request.page_token, "overlapReports", str(parent), 0)
        rows, token = next_page(
            self.reports.list(call.caller, parent, after=after, limit=limit + 1),
            limit, "overlapReports", str(parent), lambda row: row[0],
        )  # fmt: skip
        return pb.ListOverlapReportsResponse(
            overlap_reports=[self._api(r) for _, r in rows], next_page_token=token
        )

    def GetPrivacyBudget(  # noqa: N802 - gRPC's method name
        self, request: pb.GetPrivacyBudgetRequest, context: grpc.ServicerContext
    ) -> pb.GetPrivacyBudgetResponse:
        """Returns what the collaboration's noisy reports have spent and what is left."""
        call = current_call()
        collaboration = privacy_budget_collaboration(request.name)
        call.names(request.name, collaboration=collaboration)
        budget, policy, member = self.reports.budget(call.caller, collaboration)
        return pb.GetPrivacyBudgetResponse(
            privacy_budget=convert.privacy_budget(collaboration, budget, policy, member)
        )
