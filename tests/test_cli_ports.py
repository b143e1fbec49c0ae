"""A port flag that is not a TCP port is refused by the parser with the flag and the range (usage error,
exit 2), never an "unexpected OverflowError" from bind() (serve --http-port 99999, newcomer walkthrough)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onesource.cli import main, parser

FLAGS = [("serve", "--http-port"), ("serve", "--pg-port"), ("demo", "--api-port")]


@settings(max_examples=30, deadline=None)
@given(flag=st.sampled_from(FLAGS), value=st.one_of(
    st.integers(65536, 10**9).map(str), st.just("0"), st.integers(-10**6, -1).map(str),
    st.text(alphabet="abcxyz.:", min_size=1, max_size=6)))
def test_a_port_out_of_range_is_a_usage_error(flag, value):
    command, option = flag
    with pytest.raises(SystemExit) as exited:
        parser().parse_args([command, f"{option}={value}"])
    assert exited.value.code == 2


@pytest.mark.parametrize(("command", "option"), FLAGS)
def test_the_refusal_names_the_flag_and_the_range(command, option, capsys):
    with pytest.raises(SystemExit):
        main([command, option, "99999"])
    err = capsys.readouterr().err
    assert option in err and "'99999' is not a TCP port" in err and "65535" in err and "Traceback" not in err


@given(port=st.integers(1, 65535))
def test_every_port_is_taken(port):
    assert parser().parse_args(["serve", "--http-port", str(port)]).http_port == port
