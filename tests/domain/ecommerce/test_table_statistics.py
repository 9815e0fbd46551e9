"""The baseline's window statistics are read in bounded batches: however a table is split, the profile,
the per-source rates and the per-item reach are exactly those of the whole table, as pandas computes
them on it in one piece."""

import numpy as np
import pandas as pd
import pytest

from domain.ecommerce.item_push import COMMITTED_EVENTS, read_item_reach
from domain.ecommerce.profiles import NEW_ACCOUNT_DAYS, activity_profile, source_rates
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.simulation import build_world
from resources import tables


@pytest.fixture(scope="module")
def activity(tmp_path_factory) -> tuple[pd.DataFrame, object]:
    """A collected-looking activity table of a world no control was tuned on, and its Parquet file."""
    frame = pd.DataFrame(build_world(WorldConfig(seed=29, events=6000), period=0).activity_events())
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["account_created"] = pd.to_datetime(frame["account_created"]).dt.date
    frame["source"] = np.random.default_rng(3).choice(["web-clickstream", "mobile-app"], len(frame))
    path = tmp_path_factory.mktemp("tables") / "activity.parquet"
    frame.to_parquet(path, index=False)
    return frame, path


@pytest.mark.parametrize("batch_rows", [97, 1000, 1 << 20])
def test_statistics_of_any_split_are_those_of_the_whole_table(activity, batch_rows, monkeypatch):
    frame, path = activity
    monkeypatch.setattr(tables, "BATCH_ROWS", batch_rows)

    reach = read_item_reach(path)
    pairs = frame["event_type"].isin(COMMITTED_EVENTS).groupby([frame["item_id"], frame["user_id"]]).any()
    per_item = pairs.groupby(level="item_id").agg(["size", "sum"])
    assert reach.users == frame["user_id"].nunique()
    assert reach.reached == {item: int(n) for item, n in per_item["size"].items()}
    assert reach.committed == {item: int(n) for item, n in per_item["sum"].items()}
    assert list(reach.reached) == sorted(reach.reached)

    profile = activity_profile(path)
    first = frame.groupby("user_id").agg(first=("event_time", "min"), created=("account_created", "first"))
    age = first["first"].dt.tz_convert(None).dt.normalize() - pd.to_datetime(first["created"])
    intent = frame.loc[frame["event_type"] != "view", "item_id"].value_counts(normalize=True)
    assert profile == {
        "rows": len(frame),
        "event_type_shares": frame["event_type"].value_counts(normalize=True).sort_index().to_dict(),
        "top_item_intent_share": intent.max(),
        "new_account_share": (age < pd.Timedelta(days=NEW_ACCOUNT_DAYS)).mean(),
    }

    rates = source_rates(path, "event_time")
    hours = frame["event_time"].dt.floor("h")
    for source, group in hours.groupby(frame["source"]):
        span = int((group.max() - group.min()) / pd.Timedelta(hours=1)) + 1
        assert rates[source] == {"records": len(group), "hours": span, "records_per_hour": len(group) / span}
    assert set(rates) == {"web-clickstream", "mobile-app"}
