"""The timed synthetic sequence spec: parsing, stamps and the ``repeat`` key for long runs."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.data.synthetic.sequence import SequenceSpec, SyntheticSequence


def test_spec_round_trip_keeps_repeat():
    spec = SequenceSpec.parse("kind=room,seed=2,frames=5,size=56x42,fps=20,t0=3,repeat=4")
    assert spec.repeat == 4
    assert SequenceSpec.parse(spec.to_string()) == spec
    assert "repeat" not in SequenceSpec.parse("frames=5").to_string()  # the default keeps old specs unchanged


@pytest.mark.parametrize("bad", ["repeat=0", "repeat=-2", "frames=0"])
def test_spec_rejects_empty_sequences(bad):
    with pytest.raises(ValueError, match="repeat >= 1"):
        SequenceSpec.parse(bad)


def test_repeated_frames_show_the_base_frames_with_later_stamps():
    base = SyntheticSequence.from_spec("kind=room,seed=1,frames=3,size=56x42,fps=10,t0=2")
    rep = SyntheticSequence.from_spec("kind=room,seed=1,frames=3,size=56x42,fps=10,t0=2,repeat=3")
    assert len(rep) == 9
    for i in range(len(rep)):
        j = i % 3
        np.testing.assert_array_equal(rep.frame(i).rgb, base.frame(j).rgb)
        np.testing.assert_allclose(rep.frame(i).w2c, base.w2c[j])
        assert rep.stamp_ns(i) == 2_000_000_000 + i * 100_000_000  # stamps keep increasing through the repeats
        assert rep.index_of(rep.stamp_ns(i)) == i
    with pytest.raises(KeyError):
        base.index_of(rep.stamp_ns(5))  # beyond the un-repeated sequence
    with pytest.raises(IndexError, match="9 frames"):
        rep.frame(9)
