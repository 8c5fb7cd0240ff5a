from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflywheel.config import SourceConfig
from dataflywheel.data import csv_source, sources
from dataflywheel.data.examples import EXAMPLES, available_examples, load_example
from dataflywheel.data.sources import (
    Source,
    available_sources,
    register_source,
    source_from_config,
    source_from_path,
)
from dataflywheel.errors import DataError


@pytest.fixture
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "âge": rng.integers(18, 90, 50),
            "revenu €": np.round(rng.normal(1000, 200, 50), 2),
            "city": rng.choice(["Paris", "Zürich", "東京"], 50),
        }
    )


def _sqlite(path: Path, df: pl.DataFrame, table: str = "t") -> None:
    con = sqlite3.connect(path)
    cols = ", ".join(f'"{c}"' for c in df.columns)
    con.execute(f"create table {table} ({cols})")
    con.executemany(f"insert into {table} values ({', '.join('?' * df.width)})", df.rows())
    con.commit()
    con.close()


def _config_for(kind: str, tmp_path: Path, df: pl.DataFrame) -> SourceConfig:
    if kind == "csv":
        df.write_csv(tmp_path / "d.csv")
        return SourceConfig(type="csv", path="d.csv")
    if kind == "tsv":
        df.write_csv(tmp_path / "d.tsv", separator="\t")
        return SourceConfig(type="tsv", path="d.tsv")
    if kind == "jsonl":
        df.write_ndjson(tmp_path / "d.jsonl")
        return SourceConfig(type="jsonl", path="d.jsonl")
    if kind == "parquet":
        df.write_parquet(tmp_path / "d.parquet")
        return SourceConfig(type="parquet", path="d.parquet")
    if kind == "sql":
        _sqlite(tmp_path / "d.db", df)
        return SourceConfig(type="sql", url="sqlite:///d.db", query="select * from t")
    if kind == "sklearn":
        return SourceConfig(type="sklearn", name="iris")
    raise AssertionError(f"no contract fixture for source kind {kind}")


def test_registry_lists_every_builtin_kind() -> None:
    assert set(available_sources()) >= {"csv", "tsv", "jsonl", "parquet", "sql", "sklearn"}


@pytest.mark.parametrize("kind", available_sources())
def test_every_source_meets_the_contract(kind: str, tmp_path: Path, frame: pl.DataFrame) -> None:
    src = source_from_config(_config_for(kind, tmp_path, frame), tmp_path)
    assert isinstance(src, Source) and src.kind == kind
    df = src.read()
    assert isinstance(df, pl.DataFrame) and df.height > 0
    if kind != "sklearn":
        assert_frame_equal(df, frame, check_dtypes=False)
    fp = src.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert src.fingerprint() == fp
    assert src.describe()
    before = sorted(tmp_path.rglob("*"))
    src.read()
    assert sorted(tmp_path.rglob("*")) == before


def test_duplicate_kind_is_rejected_and_new_kinds_are_usable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_source("csv", lambda cfg, base: source_from_path("sklearn:iris"))

    class Fixed(Source):
        kind = "fixed"

        def read(self) -> pl.DataFrame:
            return pl.DataFrame({"x": [1]})

        def fingerprint(self) -> str:
            return "0" * 64

        def describe(self) -> str:
            return "fixed"

    register_source("fixed", lambda cfg, base: Fixed())
    try:
        assert "fixed" in available_sources()
        cfg = SourceConfig.model_construct(type="fixed")
        assert source_from_config(cfg, tmp_path).read()["x"].to_list() == [1]
    finally:
        sources._REGISTRY.pop("fixed")


def test_csv_fingerprint_is_sha256_of_the_bytes(tmp_path: Path, frame: pl.DataFrame) -> None:
    path = tmp_path / "d.csv"
    frame.write_csv(path)
    src = source_from_path(path)
    assert src.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes().replace(b"Paris", b"Lyon!"))
    assert src.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("name", "text", "delimiter"),
    [
        ("a.tsv", "x\ty\n1\t2\n", None),
        ("a.txt", "x;y\n1;2\n", None),
        ("a.txt", "x|y\n1|2\n", "|"),
        ("a.csv", "x;y\n1;2\n", None),
    ],
)
def test_delimiters(tmp_path: Path, name: str, text: str, delimiter: str | None) -> None:
    (tmp_path / name).write_text(text)
    df = source_from_config(SourceConfig(path=name, delimiter=delimiter), tmp_path).read()
    assert df.columns == ["x", "y"] and df.row(0) == (1, 2)


def test_multi_character_delimiter_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"data\.source\.delimiter"):
        source_from_config(SourceConfig(path="a.csv", delimiter="::"), tmp_path)


@pytest.mark.parametrize("bad_row", [3, 20_000])
def test_stray_string_in_numeric_column_loads_as_string(tmp_path: Path, bad_row: int) -> None:
    n = 25_000
    values = [str(i * 0.5) for i in range(n)]
    values[bad_row] = "n/a?"
    path = tmp_path / "d.csv"
    path.write_text("id,v\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    df = source_from_path(path).read()
    assert df.schema == pl.Schema({"id": pl.Int64, "v": pl.String})
    assert df.height == n and df["v"][bad_row] == "n/a?"


def test_ragged_row_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('a,b,c\n1,"two\nlines",3\n4,5,6\n7,8,9,10\n')
    with pytest.raises(DataError) as err:
        source_from_path(path).read()
    assert str(err.value) == (
        f"{path} line 5: expected 3 fields, found 4; "
        "fix the row or quote the field containing the delimiter"
    )
    assert "\n" not in str(err.value)


_SHORT_FIX = "fix the row: give it every field, leaving a missing value empty"


@pytest.mark.parametrize("chunk", [5, csv_source._CHUNK])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_short_row_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, newline: str
) -> None:
    monkeypatch.setattr(csv_source, "_CHUNK", chunk)  # 5 bytes: quotes and rows span chunks
    path = tmp_path / "d.csv"
    lines = ["a,b,c", '1,"two', 'lines, too",3', "4,5,", "", "7,8", "9,10,11"]
    path.write_bytes(newline.join(lines).encode())
    with pytest.raises(DataError) as err:
        source_from_path(path).read()
    assert str(err.value) == f"{path} line 6: expected 3 fields, found 2; {_SHORT_FIX}"


def test_short_row_deep_in_a_large_file(tmp_path: Path) -> None:
    rows = [f"{i},{i * 0.5},{i % 7}" for i in range(30_000)]
    rows[100] = "100,50.0,"  # an empty last field is a value, not a missing field
    rows[25_000] = "25000,12500.0"
    path = tmp_path / "d.csv"
    path.write_text("id,v,k\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        source_from_path(path).read()
    assert str(err.value) == f"{path} line 25002: expected 3 fields, found 2; {_SHORT_FIX}"


@pytest.mark.parametrize("chunk", [3, csv_source._CHUNK])
def test_quoted_delimiters_newlines_and_empty_fields_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(csv_source, "_CHUNK", chunk)
    path = tmp_path / "d.csv"
    path.write_text(
        'id,text,score\n1,"a, b",\n2,"say ""hi"", then\nleave",0.5\n3,plain,\n4,",",1.5\n'
    )
    df = source_from_path(path).read()
    assert df.to_dict(as_series=False) == {
        "id": [1, 2, 3, 4],
        "text": ["a, b", 'say "hi", then\nleave', "plain", ","],
        "score": [None, 0.5, None, 1.5],
    }


def test_blank_lines_are_not_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\r\n1,\r\n\r\n3,4\r\n\r\n")
    df = source_from_path(path).read()
    assert df.filter(pl.any_horizontal(pl.all().is_not_null())).rows() == [(1, None), (3, 4)]


def test_ragged_rows_match_the_csv_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random files with quoted delimiters, quotes and newlines, blank and short rows: a read
    fails exactly when the stdlib csv reader sees a ragged row, and names that row."""
    rng = np.random.default_rng(7)
    pieces = ["a", "1", ",", '"', "\n", " ", "\r\n"]
    path = tmp_path / "d.csv"
    for case in range(150):
        monkeypatch.setattr(csv_source, "_CHUNK", int(rng.choice([4, 64, 1 << 20])))
        width, newline = int(rng.integers(2, 5)), str(rng.choice(["\n", "\r\n"]))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator=newline)
        writer.writerow([f"h{i}" for i in range(width)])
        for _ in range(int(rng.integers(1, 8))):
            n = width if rng.random() < 0.8 else int(rng.integers(1, width))
            writer.writerow(["".join(rng.choice(pieces, rng.integers(0, 4))) for _ in range(n)])
            if rng.random() < 0.1:
                buf.write(newline)
        path.write_bytes(buf.getvalue().encode())
        reader = csv.reader(io.StringIO(buf.getvalue(), newline=""))
        ragged = [(reader.line_num, len(r)) for r in reader if r and len(r) != width]
        assert csv_source._fields_agree(path, ",", width) == (not ragged), case  # no slow pass
        if not ragged:
            assert source_from_path(path).read().width == width, case
            continue
        with pytest.raises(DataError) as err:
            source_from_path(path).read()
        line, found = ragged[0]
        assert str(err.value).startswith(
            f"{path} line {line}: expected {width} fields, found {found}; "
        ), case


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("e.csv", b"", "file is empty"),
        ("h.csv", b"a,b,c\n", "file has no rows"),
        ("e.jsonl", b"", "file is empty"),
        ("w.jsonl", b"\n  \n", "file has no rows"),
        ("l.csv", b"a,b\n1,caf\xe9\n", "not UTF-8 text"),
        ("p.parquet", b"PAR1 certainly not parquet", "cannot read as Parquet"),
        ("x.xlsx", b"PK", "unsupported file type '.xlsx'"),
    ],
)
def test_unusable_files_raise_one_line_data_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        source_from_path(path).read()
    assert message in str(err.value) and err.value.where == str(path) and err.value.fix
    assert "\n" not in str(err.value)


def test_unsupported_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "x.xls").write_bytes(b"?")
    with pytest.raises(DataError, match=r"\.csv.*\.jsonl.*\.parquet"):
        source_from_path(tmp_path / "x.xls")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found") as err:
        source_from_config(SourceConfig(path="nope.csv"), tmp_path)
    assert err.value.where == str(tmp_path / "nope.csv")


def test_jsonl_reads_objects_and_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.ndjson"
    path.write_text('{"a": 1, "b": "x"}\n\n{"a": 2, "b": null}\n')
    assert source_from_path(path).read().to_dict(as_series=False) == {"a": [1, 2], "b": ["x", None]}
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3,\n')
    with pytest.raises(DataError, match="line 3: invalid JSON"):
        source_from_path(path).read()
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2: expected a JSON object"):
        source_from_path(path).read()


def test_parquet_folder_is_stacked_in_name_order(tmp_path: Path, frame: pl.DataFrame) -> None:
    folder = tmp_path / "parts"
    (folder / "sub").mkdir(parents=True)
    frame[25:].write_parquet(folder / "sub" / "b.parquet")
    frame[:25].write_parquet(folder / "a.pq")
    (folder / "_SUCCESS").write_text("")
    src = source_from_path(folder)
    assert src.kind == "parquet"
    assert_frame_equal(src.read(), frame)
    fp = src.fingerprint()
    (folder / "a.pq").rename(folder / "c.pq")
    assert src.fingerprint() != fp  # relative names are part of the fingerprint


def test_folder_of_csv_files_with_different_headers(tmp_path: Path) -> None:
    (tmp_path / "1.csv").write_text("a,b\n1,2\n")
    (tmp_path / "2.csv").write_text("a,c\n3,4\n")
    with pytest.raises(DataError, match="columns differ") as err:
        source_from_path(tmp_path).read()
    assert err.value.where == str(tmp_path / "2.csv")


def test_folder_kind_detection_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(DataError, match="no data files"):
        source_from_path(tmp_path)
    (tmp_path / "a.csv").write_text("a\n1\n")
    (tmp_path / "b.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(DataError, match="mixes csv and jsonl"):
        source_from_path(tmp_path)


def test_sql_source(tmp_path: Path, frame: pl.DataFrame) -> None:
    _sqlite(tmp_path / "d.db", frame)
    cfg = SourceConfig(type="sql", url="sqlite:///d.db", query='select * from t where "âge" > 40')
    src = source_from_config(cfg, tmp_path)
    assert_frame_equal(src.read(), frame.filter(pl.col("âge") > 40), check_dtypes=False)
    fp = src.fingerprint()
    con = sqlite3.connect(tmp_path / "d.db")
    con.execute("""update t set city = 'Bern' where "âge" > 40""")
    con.commit()
    con.close()
    src.read()
    assert src.fingerprint() != fp
    other = source_from_config(
        cfg.model_copy(update={"query": 'select * from t where "âge" >  40'}), tmp_path
    )
    assert other.read().equals(src.read()) and other.fingerprint() != src.fingerprint()


def test_sql_fingerprint_before_read_describes_what_read_returns(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    _sqlite(tmp_path / "d.db", frame)
    src = source_from_config(
        SourceConfig(type="sql", url=f"sqlite:///{tmp_path / 'd.db'}", query="select * from t"),
        Path("/nonexistent"),
    )
    fp = src.fingerprint()
    con = sqlite3.connect(tmp_path / "d.db")
    con.execute("delete from t where rowid > 10")
    con.commit()
    con.close()
    assert src.read().height == frame.height and src.fingerprint() == fp  # one snapshot
    assert src.read().height == 10 and src.fingerprint() != fp


@pytest.mark.parametrize(
    ("url", "query", "message"),
    [
        ("sqlite:///d.db", "select * from nope", "query failed: no such table"),
        ("sqlite:///d.db", "selec oops", "query failed"),
        ("sqlite:///d.db", "select * from t where 0", "query returned no rows"),
        ("not a url", "select 1", "not a valid database URL"),
        ("nosuchdb://host/x", "select 1", "cannot use this database URL"),
        ("sqlite:///missing.db", "select 1", "database file not found"),
    ],
)
def test_sql_errors(
    tmp_path: Path, frame: pl.DataFrame, url: str, query: str, message: str
) -> None:
    _sqlite(tmp_path / "d.db", frame)
    with pytest.raises(DataError, match=message) as err:
        source_from_config(SourceConfig(type="sql", url=url, query=query), tmp_path).read()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "missing.db").exists()


def test_sklearn_examples() -> None:
    from sklearn.datasets import load_breast_cancer

    df = source_from_path("sklearn:breast_cancer").read()
    assert df.columns == [*load_breast_cancer().feature_names, "target"]
    assert df.width == 31 and sorted(df["target"].unique().to_list()) == [0, 1]
    assert load_example("iris")["target"].n_unique() == 3
    assert load_example("wine")["target"].dtype == pl.Int64
    assert load_example("diabetes")["target"].dtype == pl.Float64
    assert [EXAMPLES[n] for n in available_examples()] == [
        "binary",
        "regression",
        "multiclass",
        "multiclass",
    ]
    fp = source_from_path("sklearn:iris").fingerprint()
    assert (
        fp
        == source_from_path("sklearn:iris").fingerprint()
        != source_from_path("sklearn:wine").fingerprint()
    )


def test_unknown_sklearn_example_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match="unknown example 'titanic'; use one of breast_cancer, diabetes, iris, wine"
    ):
        source_from_config(SourceConfig(type="sklearn", name="titanic"), tmp_path)
