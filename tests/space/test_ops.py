import pytest

from neas.errors import NeasError
from neas.space.ops import OFFICIAL_IDS, SKIP, Op, op_from_official, op_to_official, parse_op


@pytest.mark.parametrize("name,op", [("k3e4", Op(3, 4)), ("K7E6", Op(7, 6)), ("skip", SKIP), (" k5e3 ", Op(5, 3))])
def test_parse_and_str(name, op):
    assert parse_op(name) == op
    assert parse_op(str(op)) == op


@pytest.mark.parametrize("bad", ["k4e4", "conv", "k3", "e6", "k3e0", ""])
def test_bad_op_names(bad):
    with pytest.raises(NeasError, match="op"):
        parse_op(bad)


def test_official_ids_round_trip():
    assert [str(OFFICIAL_IDS[i]) for i in range(6)] == ["k3e4", "k3e6", "k5e4", "k5e6", "k7e4", "k7e6"]
    for i, op in OFFICIAL_IDS.items():
        assert op_to_official(op) == i
        assert op_from_official(i) == op
    with pytest.raises(NeasError, match="no official id"):
        op_to_official(Op(3, 3))
    with pytest.raises(NeasError, match="unknown official op id 9"):
        op_from_official(9)
