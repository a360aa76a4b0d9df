"""Import adapters (Olist, DoorDash) on tiny fixtures written in the sources' own formats."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.data.importers.common import stable_ids
from cxagent.data.importers.doordash import import_doordash
from cxagent.data.importers.olist import import_olist
from cxagent.data.io import load_manifest, read_frame
from cxagent.data.validate import validate_dataset
from cxagent.errors import OutputExistsError, SourceDataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def hexid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def key(name: str) -> int:
    return int(stable_ids([hexid(name)])[0])


def write_gz(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, compression="gzip")


# --------------------------------------------------------------------------- Olist fixture

PRODUCTS = {  # product -> Portuguese category
    "p_food": "alimentos_bebidas",  # food_drink -> grocery, fragile
    "p_beauty": "beleza_saude",  # health_beauty -> convenience
    "p_glass": "utilidades_domesticas",  # housewares -> retail, fragile
    "p_gamer": "pc_gamer",  # untranslated -> retail
}
TRANSLATION = [
    ("alimentos_bebidas", "food_drink"),
    ("beleza_saude", "health_beauty"),
    ("utilidades_domesticas", "housewares"),
]


def _order(name: str, status: str, bought: str, delivered: str, eta: str) -> dict[str, object]:
    return {
        "order_id": hexid(name),
        "customer_id": hexid("c_" + name),
        "order_status": status,
        "order_purchase_timestamp": bought,
        "order_approved_at": bought,
        "order_delivered_carrier_date": "",
        "order_delivered_customer_date": delivered,
        "order_estimated_delivery_date": eta,
    }


def _line(
    order: str, n: int, product: str, seller: str, price: float, when: str
) -> dict[str, object]:
    return {
        "order_id": hexid(order),
        "order_item_id": n,
        "product_id": hexid(product),
        "seller_id": hexid(seller),
        "shipping_limit_date": when,
        "price": price,
        "freight_value": 7.5,
    }


def make_olist(root: Path) -> Path:
    full = root / "full"
    full.mkdir(parents=True)
    write_gz(
        full / "olist_products_dataset.csv.gz",
        [
            {"product_id": hexid(p), "product_category_name": c, "product_weight_g": 100}
            for p, c in PRODUCTS.items()
        ],
    )
    pd.DataFrame(
        [
            {
                "seller_id": hexid(s),
                "seller_zip_code_prefix": "13023",
                "seller_city": "x",
                "seller_state": st,
            }
            for s, st in (("s1", "SP"), ("s2", "MG"), ("s3", "RJ"))
        ]
    ).to_csv(full / "olist_sellers_dataset.csv", index=False)
    text = "product_category_name,product_category_name_english\r\n" + "".join(
        f"{pt},{en}\r\n" for pt, en in TRANSLATION
    )
    (full / "product_category_name_translation.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())

    cabg = root / "sample_cabg"
    orders = [
        _order(
            "o1", "delivered", "2017-10-02 10:56:33", "2017-10-10 21:25:13", "2017-10-18 00:00:00"
        ),
        _order("o2", "canceled", "2017-11-01 12:00:00", "", "2017-11-20 00:00:00"),
        _order("o3", "shipped", "2018-01-05 16:30:00", "", "2018-01-25 00:00:00"),
        _order(
            "o4", "unavailable", "2018-02-01 09:00:00", "2018-02-09 10:00:00", "2018-02-20 00:00:00"
        ),
        _order("o5", "delivered", "not a date", "2018-03-09 10:00:00", "2018-03-20 00:00:00"),
        _order(
            "o6", "delivered", "2018-04-02 13:14:15", "2018-04-09 10:00:00", "2018-04-20 00:00:00"
        ),
    ]
    write_gz(cabg / "olist_orders_dataset.csv.gz", orders)
    states = {"o1": "SP", "o2": "SP", "o3": "MG", "o4": "RJ", "o5": "SP", "o6": "SP"}
    write_gz(
        cabg / "olist_customers_dataset.csv.gz",
        [
            {
                "customer_id": hexid("c_" + o),
                "customer_unique_id": hexid("u_" + o),
                "customer_zip_code_prefix": "01000",
                "customer_city": "sao paulo",
                "customer_state": st,
            }
            for o, st in states.items()
        ],
    )
    write_gz(
        cabg / "olist_order_items_dataset.csv.gz",
        [
            _line("o1", 1, "p_food", "s1", 10.0, "2017-10-04 10:00:00"),
            _line("o1", 2, "p_food", "s1", 5.5, "2017-10-04 10:00:00"),
            _line("o3", 1, "p_beauty", "s2", 30.0, "2018-01-07 10:00:00"),
            _line("o4", 1, "p_gamer", "s2", 99.9, "2018-02-03 10:00:00"),
            _line("o5", 1, "p_food", "s1", 1.0, "2018-03-03 10:00:00"),
            _line("o6", 1, "p_beauty", "s2", 12.0, "2018-04-04 10:00:00"),
        ],
    )
    review = {"review_comment_title": "", "review_answer_timestamp": "2017-10-12 10:00:00"}
    write_gz(
        cabg / "olist_order_reviews_dataset.csv.gz",
        [
            {
                **review,
                "review_id": hexid("r1"),
                "order_id": hexid("o1"),
                "review_score": 5,
                "review_comment_message": "Ótimo, chegou antes",
                "review_creation_date": "2017-10-11 00:00:00",
            },
            {
                **review,
                "review_id": hexid("r3"),
                "order_id": hexid("o3"),
                "review_score": 2,
                "review_comment_message": "",
                "review_creation_date": "2018-01-05 00:00:00",
            },
            {
                **review,
                "review_id": hexid("r6"),
                "order_id": hexid("o6"),
                "review_score": 4,
                "review_comment_message": "",
                "review_creation_date": "2018-03-01 00:00:00",
            },
        ],
    )

    head = root / "sample_head5k"  # re-saved: month-first minute times, extra key columns
    write_gz(
        head / "olist_orders_dataset.csv.gz",
        [
            _order("o6", "delivered", "4/2/2018 13:14", "4/9/2018 10:00", "4/20/2018 0:00"),
            _order("o7", "delivered", "3/29/2017 23:05", "4/25/2017 9:30", "4/20/2017 0:00"),
        ],
    )
    write_gz(
        head / "olist_customers_dataset.csv.gz",
        [
            {
                "customer_pk": i + 1,
                "customer_id": hexid("c_" + o),
                "customer_unique_id": hexid("u_" + o),
                "customer_zip_code_prefix": 3052,
                "customer_city": "rio",
                "customer_state": "RJ",
            }
            for i, o in enumerate(("o6", "o7"))
        ],
    )
    write_gz(
        head / "olist_order_items_dataset.csv.gz",
        [_line("o7", n, "p_glass", "s3", 20.0, "4/1/2017 13:05") for n in range(1, 5)],
    )
    write_gz(
        head / "olist_order_reviews_dataset.csv.gz",
        [
            {
                "review_pk": 1,
                "order_id": hexid("o7"),
                "review_score": 1,
                "review_creation_date": "4/26/2017 0:00",
                "review_answer_timestamp": "4/27/2017 10:00",
            }
        ],
    )
    return root


@pytest.fixture
def olist_src(tmp_path: Path) -> Path:
    return make_olist(tmp_path / "olist")


def test_olist_maps_known_rows(olist_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = import_olist(olist_src, out)
    report = validate_dataset(out)
    assert report.ok, [str(p) for p in report.problems]

    orders = read_frame(out, "orders").set_index("order_id")
    assert set(orders.index) == {key(o) for o in ("o1", "o3", "o4", "o6", "o7")}
    o1 = orders.loc[key("o1")]
    assert o1["user_id"] == key("u_o1")
    assert o1["store_id"] == key("s1")
    assert (o1["region"], o1["category"], o1["daypart"], o1["basket_size"]) == (
        "SP",
        "grocery",
        "breakfast",
        "small",
    )
    assert o1["order_time"] == pd.Timestamp("2017-10-02 10:56:33")
    assert o1["promised_eta"] == pd.Timestamp("2017-10-18")
    assert (o1["item_count"], o1["basket_value"]) == (2, 15.5)
    o7 = orders.loc[key("o7")]  # month-first minute times; 4 lines of housewares
    assert o7["order_time"] == pd.Timestamp("2017-03-29 23:05")
    assert (o7["category"], o7["daypart"], o7["basket_size"]) == ("retail", "late_night", "medium")
    # o6 is in both samples: the sample_cabg copy (seconds precision) wins.
    assert orders.loc[key("o6"), "order_time"] == pd.Timestamp("2018-04-02 13:14:15")

    deliveries = read_frame(out, "deliveries").set_index("order_id")
    assert deliveries.loc[key("o1"), "actual_delivery_time"] == pd.Timestamp("2017-10-10 21:25:13")
    assert not deliveries.loc[key("o1"), "canceled_flag"]
    assert deliveries.loc[key("o4"), "canceled_flag"]  # unavailable = canceled, date nulled
    assert pd.isna(deliveries.loc[key("o4"), "actual_delivery_time"])
    assert not deliveries.loc[key("o3"), "canceled_flag"]  # shipped: still open
    assert pd.isna(deliveries.loc[key("o3"), "actual_delivery_time"])

    skus = read_frame(out, "skus").set_index("name")
    assert skus.loc[hexid("p_food"), ["category", "fragile_flag"]].tolist() == ["grocery", True]
    assert skus.loc[hexid("p_beauty"), ["category", "fragile_flag"]].tolist() == [
        "convenience",
        False,
    ]
    assert skus.loc[hexid("p_glass"), ["category", "fragile_flag"]].tolist() == ["retail", True]
    assert skus.loc[hexid("p_gamer"), "category"] == "retail"
    items = read_frame(out, "items")
    assert len(items) == 2 + 1 + 1 + 1 + 4
    assert set(items["sku_id"]) <= set(skus["sku_id"])
    assert (items["ordered_qty"] == 1).all()
    stores = read_frame(out, "stores").set_index("store_id")
    assert stores.loc[key("s1"), ["region", "category", "name"]].tolist() == [
        "SP",
        "grocery",
        hexid("s1"),
    ]

    ratings = read_frame(out, "ratings").set_index("order_id")
    assert ratings.loc[key("o1"), "free_text"] == "Ótimo, chegou antes"
    assert ratings.loc[key("o1"), "stars"] == 5
    # dated the purchase day at midnight, before the purchase time: moved to the purchase time
    assert ratings.loc[key("o3"), "rating_time"] == pd.Timestamp("2018-01-05 16:30:00")
    assert key("o6") not in ratings.index  # dated a month before the purchase: dropped
    assert pd.isna(ratings.loc[key("o7"), "free_text"])  # head5k has no comment column

    assert manifest.source == "olist"
    assert (manifest.start, manifest.end) == ("2017-03-29", "2018-04-02")
    assert set(manifest.missing_tables) == {
        "inventory_events",
        "support_events",
        "supply",
        "change_events",
    }
    assert "merchant_prep_time_s" in manifest.missing_columns["deliveries"]
    assert "refund_amount" in manifest.missing_columns["items"]
    assert not manifest.has("deliveries", "dasher_wait_s")
    notes = "\n".join(manifest.notes)
    assert "dropped 1 orders: order_purchase_timestamp missing or unparsable" in notes
    assert "dropped 1 orders: no item lines" in notes
    assert "dropped 1 reviews: review dated before the purchase day" in notes
    assert load_manifest(out) == manifest


def test_olist_missing_column_names_file_and_column(olist_src: Path, tmp_path: Path) -> None:
    path = olist_src / "sample_head5k" / "olist_orders_dataset.csv.gz"
    df = pd.read_csv(path).drop(columns=["order_estimated_delivery_date"])
    df.to_csv(path, index=False, compression="gzip")
    out = tmp_path / "out"
    with pytest.raises(SourceDataError, match="order_estimated_delivery_date") as info:
        import_olist(olist_src, out)
    assert str(path) in str(info.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_olist_missing_file_or_folder(olist_src: Path, tmp_path: Path) -> None:
    (olist_src / "full" / "olist_sellers_dataset.csv").unlink()
    with pytest.raises(SourceDataError, match="olist_sellers_dataset"):
        import_olist(olist_src, tmp_path / "out")
    with pytest.raises(SourceDataError, match="not found"):
        import_olist(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_out_is_not_overwritten(olist_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        import_olist(olist_src, out)
    assert (out / "keep.txt").read_text() == "mine"
    import_olist(olist_src, out, overwrite=True)
    assert validate_dataset(out).ok and not (out / "keep.txt").exists()


# ------------------------------------------------------------------------ DoorDash fixture

DD_COLUMNS = (
    "market_id,created_at,actual_delivery_time,store_id,store_primary_category,order_protocol,"
    "total_items,subtotal,num_distinct_items,min_item_price,max_item_price,total_onshift_dashers,"
    "total_busy_dashers,total_outstanding_orders,estimated_order_place_duration,"
    "estimated_store_to_consumer_driving_duration,created_hours,delivery_time"
)
DD_ROWS = (  # first field: the unnamed original row index
    "119152,4.0,2015-01-25 19:45:36,2015-01-25 20:07:18,3597,american,3.0,4,2140,4,275,1125,47.0,92.0,38.0,251,169.0,19,1302.0",
    "10465,4.0,2015-01-25 19:50:00,2015-01-25 20:40:00,3597,,3.0,2,1370,0,475,895,51.0,40.0,42.0,251,748.0,19,3000.0",
    "95349,3.0,2015-07-04 18:00:00,2015-07-04 18:50:00,808,alcohol,1.0,3,1767,3,199,749,,,,446,784.0,18,3000.0",
    "5,,2015-01-26 19:00:00,2015-01-26 19:40:00,808,alcohol,1.0,1,900,1,900,900,5.0,3.0,4.0,446,300.0,19,2400.0",
    "6,2.0,garbage,2015-01-26 19:40:00,808,alcohol,1.0,1,900,1,900,900,5.0,3.0,4.0,446,300.0,19,2400.0",
    "7,2.0,2015-01-26 19:00:00,2015-01-26 18:40:00,808,alcohol,1.0,1,900,1,900,900,5.0,3.0,4.0,446,300.0,19,2400.0",
)


def make_doordash(root: Path, header: str = DD_COLUMNS) -> Path:
    root.mkdir(parents=True)
    path = root / "historical_data_random10pct_sample.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("," + header + "\n" + "\n".join(DD_ROWS) + "\n")
    (root / "data_description.txt").write_text("column descriptions\n")
    return root


def test_doordash_maps_known_rows(tmp_path: Path) -> None:
    src = make_doordash(tmp_path / "doordash")
    out = tmp_path / "out"
    manifest = import_doordash(src, out)
    report = validate_dataset(out)
    assert report.ok, [str(p) for p in report.problems]

    orders = read_frame(out, "orders").set_index("order_id")
    assert sorted(orders.index) == [10465, 95349, 119152]
    first = orders.loc[119152]
    # 19:45:36 UTC in January is 11:45:36 PST (UTC-8)
    assert first["order_time"] == pd.Timestamp("2015-01-25 11:45:36")
    # + (251 + 169) s of platform estimates + the 20 min buffer
    assert first["promised_eta"] == pd.Timestamp("2015-01-25 12:12:36")
    assert (first["region"], first["store_id"], first["category"]) == (
        "market_4",
        3597,
        "convenience",
    )
    assert (first["basket_value"], first["item_count"], first["basket_size"]) == (
        21.40,
        4,
        "medium",
    )
    assert (first["daypart"], first["user_id"]) == ("lunch", 119152)
    assert orders.loc[10465, "item_count"] == 1  # num_distinct_items 0 -> 1
    assert orders.loc[10465, "category"] == "convenience"  # no category: the store's
    summer = orders.loc[95349]  # July: PDT (UTC-7)
    assert summer["order_time"] == pd.Timestamp("2015-07-04 11:00:00")
    assert (summer["category"], summer["region"]) == ("grocery", "market_3")
    deliveries = read_frame(out, "deliveries").set_index("order_id")
    assert deliveries.loc[119152, "actual_delivery_time"] == pd.Timestamp("2015-01-25 12:07:18")
    assert not deliveries["canceled_flag"].any()

    supply = read_frame(out, "supply")
    assert len(supply) == 1  # one region x interval with counts; the July order has none
    row = supply.iloc[0]
    assert row["interval_start"] == pd.Timestamp("2015-01-25 11:45:00")
    assert (row["dashers_on_shift"], row["busy_dashers"], row["outstanding_orders"]) == (49, 66, 40)

    assert {"items", "skus", "ratings", "support_events", "inventory_events"} <= set(
        manifest.missing_tables
    )
    assert "merchant_prep_time_s" in manifest.missing_columns["deliveries"]
    assert "eta_model" in manifest.missing_columns["orders"]
    assert read_frame(out, "items").empty
    notes = "\n".join(manifest.notes)
    assert "dropped 1 orders: created_at missing or unparsable" in notes
    assert "dropped 1 orders: actual_delivery_time before created_at" in notes
    assert "dropped 1 orders: market_id missing" in notes
    assert "1 of 2 orders report more busy than on-shift dashers" in notes
    assert "20 min fixed buffer" in notes


def test_doordash_accepts_the_file_itself(tmp_path: Path) -> None:
    src = make_doordash(tmp_path / "doordash")
    manifest = import_doordash(src / "historical_data_random10pct_sample.csv.gz", tmp_path / "out")
    assert manifest.source == "doordash"


def test_doordash_missing_column_writes_nothing(tmp_path: Path) -> None:
    src = make_doordash(tmp_path / "doordash", DD_COLUMNS.replace("created_at", "created"))
    out = tmp_path / "out"
    with pytest.raises(SourceDataError, match="created_at") as info:
        import_doordash(src, out)
    assert "historical_data_random10pct_sample.csv.gz" in str(info.value)
    assert not out.exists()
    with pytest.raises(SourceDataError, match="not found"):
        import_doordash(tmp_path / "nowhere", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceDataError, match=r"historical_data\.csv"):
        import_doordash(tmp_path / "empty", out)
    assert not out.exists()


def test_cli_imports_and_validates(olist_src: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    dd = make_doordash(tmp_path / "doordash")
    for name, src in (("olist", olist_src), ("doordash", dd)):
        out = tmp_path / f"out_{name}"
        result = runner.invoke(app, ["import", name, str(src), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert runner.invoke(app, ["validate", str(out)]).exit_code == 0
        again = runner.invoke(app, ["import", name, str(src), "--out", str(out)])
        assert again.exit_code == 2  # exists, no --overwrite
    (olist_src / "sample_cabg" / "olist_order_items_dataset.csv.gz").unlink()
    bad = tmp_path / "bad"
    result = runner.invoke(app, ["import", "olist", str(olist_src), "--out", str(bad)])
    assert result.exit_code == 2
    assert not bad.exists()


@pytest.mark.shared_data
def test_real_data_imports_validate(tmp_path: Path) -> None:
    real = SHARED_DATA / "real"
    if not (real / "olist").is_dir() or not (real / "doordash").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data missing at {real} (required when CI=true)")
        pytest.skip(f"shared data not present at {real}")
    olist = import_olist(real / "olist", tmp_path / "olist")
    report = validate_dataset(tmp_path / "olist")
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.rows["orders"] > 10_000 and olist.start and olist.start.startswith("2016")
    doordash = import_doordash(real / "doordash", tmp_path / "doordash")
    report = validate_dataset(tmp_path / "doordash")
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.rows["orders"] > 19_000 and report.rows["supply"] > 0
    assert doordash.start == "2015-01-21"
    # root-cause analysis runs on both and says what their data cannot test
    runner = CliRunner()
    for name, where, since in (
        ("olist", "SP", "2018-03-01"),
        ("doordash", "market_2", "2015-02-10"),
    ):
        args = ["investigate", "--data", str(tmp_path / name), "--json"]
        result = runner.invoke(app, [*args, "--slice", f"region={where}", "--since", since])
        assert result.exit_code == 0, result.output
        found = json.loads(result.stdout)["incidents"][0]
        assert {"batching_policy", "prep_time_drift", "dasher_shortage"} <= set(
            found["not_testable"]
        ), name
        assert "eta_model_bias" not in found["not_testable"]  # both record promises


def test_doordash_original_file_without_index_column(tmp_path: Path) -> None:
    src = tmp_path / "doordash"
    src.mkdir()
    rows = [r.split(",", 1)[1] for r in DD_ROWS]  # the original file has no index column
    (src / "historical_data.csv").write_text(DD_COLUMNS + "\n" + "\n".join(rows) + "\n")
    manifest = import_doordash(src, tmp_path / "out")
    assert validate_dataset(tmp_path / "out").ok
    assert sorted(read_frame(tmp_path / "out", "orders")["order_id"]) == [0, 1, 2]
    assert any("row number" in n for n in manifest.notes)
