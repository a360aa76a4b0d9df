import numpy as np

from cxagent.data.cohorts import BASKET_SIZES, DAYPARTS, basket_sizes, dayparts


def test_every_hour_has_exactly_one_daypart_and_dinner_covers_18_to_20() -> None:
    names = dayparts(np.arange(24))
    assert set(names) == set(DAYPARTS)
    assert len(names) == 24
    assert all(names[h] == "dinner" for h in (18, 19, 20))
    assert names[12] == "lunch" and names[8] == "breakfast" and names[23] == "late_night"
    assert names[0] == "late_night" and names[4] == "late_night" and names[5] == "breakfast"


def test_basket_size_boundaries() -> None:
    assert list(basket_sizes([1, 3, 4, 9, 10, 40])) == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]
    assert set(BASKET_SIZES) == {"small", "medium", "large"}


def test_hours_out_of_range_are_rejected() -> None:
    import pytest

    with pytest.raises(ValueError, match="0..23"):
        dayparts([24])
