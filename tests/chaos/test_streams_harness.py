"""The stream load's own arithmetic: how a generation stream's end is read, its
window, and the goal that no stream is cut without a clear status."""

from __future__ import annotations

from maas_proto.inference import grpc_predict_v2_pb2 as pb

from tools.chaos.run import Report, Row
from tools.chaos.streams import (
    COMPLETE,
    SILENT,
    STREAM_ERROR,
    StreamLoad,
    StreamRecord,
    classify,
    generate_request,
)


def token(final: bool = False) -> pb.ModelStreamInferResponse:
    response = pb.ModelStreamInferResponse()
    response.infer_response.parameters["triton_final_response"].bool_param = final
    return response


def error(message: str, status: str = "") -> pb.ModelStreamInferResponse:
    response = pb.ModelStreamInferResponse(error_message=message)
    response.infer_response.parameters["triton_final_response"].bool_param = True
    if status:
        response.infer_response.parameters["maas_error_status"].string_param = status
    return response


def test_a_stream_is_complete_only_with_its_final_response() -> None:
    assert classify([token(), token(), token(final=True)]) == (COMPLETE, 3, "")
    assert classify([token(), token()]) == (SILENT, 2, "2 responses, none final")
    assert classify([]) == (SILENT, 0, "0 responses, none final")


def test_an_error_response_is_a_cut_with_its_status_and_the_tokens_before_it() -> None:
    cut = classify([token(), error("backend went away", "UNAVAILABLE"), token(final=True)])
    assert cut == ("UNAVAILABLE", 1, "backend went away")
    assert classify([error("no status")]) == (STREAM_ERROR, 0, "no status")


def test_the_request_asks_for_a_stream_of_the_named_model() -> None:
    request = generate_request("smollm2", "hi", 7, "c0-1")
    assert (request.model_name, request.id) == ("smollm2", "c0-1")
    inputs = {t.name: t for t in request.inputs}
    assert inputs["sampling_parameters"].contents.bytes_contents == [b'{"max_tokens": 7}']
    assert inputs["stream"].contents.bool_contents == [True]
    assert "hi" in inputs["text_input"].contents.bytes_contents[0].decode()


def test_a_window_counts_the_streams_that_ended_in_it() -> None:
    load = StreamLoad(
        "localhost:0",
        records=[
            StreamRecord(1.0, 2.0, COMPLETE, 24),  # before the window
            StreamRecord(8.0, 9.9, COMPLETE, 24),  # started before, ended before
            StreamRecord(10.0, 11.0, COMPLETE, 24),
            StreamRecord(9.5, 11.0, "UNAVAILABLE", 5, "cut"),  # cut by this window's fault
            StreamRecord(11.0, 11.1, "UNAVAILABLE", 0, "no backend"),
            StreamRecord(12.0, 13.0, SILENT, 3, "3 responses, none final"),
            StreamRecord(14.5, 16.0, "CANCELLED", 1),  # ended after it
        ],
    )
    w = load.window(10.0, 15.0)
    assert (w.sent, w.complete, w.cut, w.silent, w.cut_after_tokens) == (4, 1, 2, 1, 1)
    assert w.outcomes == {COMPLETE: 1, "UNAVAILABLE": 2, SILENT: 1}
    assert w.details["UNAVAILABLE: cut"] == 1


def test_a_stream_cut_without_a_status_fails_any_row_and_shows_in_the_table() -> None:
    load = StreamLoad(
        "localhost:0",
        records=[
            StreamRecord(10.0, 11.0, "UNAVAILABLE", 5, "cut"),
            StreamRecord(12.0, 13.0, SILENT, 3),
        ],
    )
    hang = Row("hang", "replica SIGSTOPped", False, sent=10, failed=2)
    hang.streams = load.window(10.0, 12.0)  # the clear cut only
    flip = Row("flip", "alias flip", True, sent=10)
    flip.streams = load.window(12.0, 14.0)  # the silent one
    report = Report([hang, flip], {}, {}, "logs")
    assert report.unmet() == [flip]
    table = report.table()
    assert "| replica SIGSTOPped | 1 | 0 | 1 (UNAVAILABLE 1) | 1 | 0 |" in table
    assert "| alias flip | 1 | 0 | 0 | 0 | 1 |" in table
