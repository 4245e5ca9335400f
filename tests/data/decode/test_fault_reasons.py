"""The reasons for a decoding process that died or hung, and telling them from errors the reading code raised."""

from gnvideo.data.decode.errors import crash_reason, hang_reason, is_decoder_fault, problem_reason


def test_crash_and_hang_reasons_are_decoder_faults():
    assert crash_reason(-11) == "decoder crashed: signal 11 (SIGSEGV)"
    assert crash_reason(3) == "decoder crashed: exit status 3" and crash_reason(None) == "decoder crashed"
    assert hang_reason(60.0) == "decoder hung: no frames after 60 s"
    assert all(is_decoder_fault(r) for r in (crash_reason(-11), crash_reason(3), crash_reason(None), hang_reason(4)))
    assert not is_decoder_fault(problem_reason(RuntimeError("unexpected")))
    assert not is_decoder_fault("cannot open: Invalid data found when processing input")
