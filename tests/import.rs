//! `litebroker import`: CSV, TSV and JSON Lines into a table through the real
//! broker and CLI, as one atomic transaction — quotes, embedded newlines, UTF-8,
//! empty fields, values typed as `exec` types its parameters, the line number of
//! a bad line or a refused row, and nothing imported or created on failure.

use std::path::Path;

use litebroker_tests::*;

fn setup() -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    (t, b)
}

fn write(t: &TestDir, name: &str, text: &str) -> String {
    let p = t.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn tables(db: &Path) -> Vec<String> {
    query_texts(
        db,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'",
    )
}

/// Each row as text: `value:type` per column, `|`-separated.
fn dump(db: &Path, sql: &str) -> Vec<String> {
    query_texts(db, sql)
}

const CSV: &str = "sku,qty,note\n\
A1,5,\"hello, \"\"world\"\"\"\n\
B2,,\"two\nlines\"\n\
C3,4.5,héllo ✓\n\
D4,\"007\",\n";

#[test]
fn csv_with_quotes_newlines_utf8_and_empty_fields_lands_whole_and_typed() {
    let (t, _b) = setup();
    let db = t.db();
    let file = write(&t, "skus.csv", CSV);
    let o = cli(&db, &["import", &file, "--table", "skus", "--create"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).trim(), "imported 4 rows into skus");
    let rows = dump(&db, "SELECT sku || '|' || quote(qty) || '|' || quote(note) FROM skus ORDER BY rowid");
    assert_eq!(
        rows,
        [
            "A1|5|'hello, \"world\"'",
            "B2|''|'two\nlines'",
            "C3|4.5|'héllo ✓'",
            // A JSON string stays text, as an exec parameter does.
            "D4|'007'|''",
        ]
    );
    // Created without declared types: each value kept the type it was read as.
    assert_eq!(query_texts(&db, "SELECT type FROM pragma_table_info('skus')"), ["", "", ""]);

    // --empty-as-null, and --json.
    let o = cli(&db, &["--json", "import", &file, "--table", "skus", "--empty-as-null"]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o), serde_json::json!({ "table": "skus", "rows": 4 }));
    assert_eq!(query_i64(&db, "SELECT count(*) FROM skus WHERE qty IS NULL OR note IS NULL"), 2);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM skus"), 8);
}

#[test]
fn tsv_from_stdin_and_jsonl_objects_and_arrays() {
    let (t, _b) = setup();
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (name TEXT, n INTEGER, extra)"]), 0);
    let tsv = "name\tn\n\"tab\there\"\t1\nünï\t\n";
    let o = cli_with_stdin(
        &db,
        &["import", "-", "--format", "tsv", "--table", "t", "--empty-as-null"],
        Some(tsv),
    );
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).trim(), "imported 2 rows into t");
    let jsonl = "{\"name\": \"j\\\"1\\nx\", \"n\": 7, \"extra\": [1, 2]}\n\n{\"n\": null, \"name\": \"k\"}\n";
    let file = write(&t, "t.jsonl", jsonl);
    assert_exit(&cli(&db, &["import", &file, "--table", "t"]), 0);
    let arrays = write(&t, "a.ndjson", "[\"p\", 1, true]\n[\"q\", 2.5, null]\n");
    assert_exit(&cli(&db, &["import", &arrays, "--table", "t"]), 0);
    let rows =
        dump(&db, "SELECT quote(name) || '|' || quote(n) || '|' || quote(extra) FROM t ORDER BY rowid");
    assert_eq!(
        rows,
        [
            "'tab\there'|1|NULL",
            "'ünï'|NULL|NULL",
            "'j\"1\nx'|7|'[1,2]'",
            "'k'|NULL|NULL",
            "'p'|1|1",
            "'q'|2.5|NULL",
        ]
    );
}

#[test]
fn no_header_goes_to_the_tables_columns_or_to_c1_cn() {
    let (t, _b) = setup();
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (a, b, c)"]), 0);
    let file = write(&t, "rows.csv", "1,x\n2,y\n");
    assert_exit(&cli(&db, &["import", &file, "--table", "t", "--no-header"]), 0);
    assert_eq!(dump(&db, "SELECT a || b || quote(c) FROM t ORDER BY a"), ["1xNULL", "2yNULL"]);
    assert_exit(&cli(&db, &["import", &file, "--table", "fresh", "--no-header", "--create"]), 0);
    assert_eq!(query_texts(&db, "SELECT name FROM pragma_table_info('fresh')"), ["c1", "c2"]);
}

#[test]
fn a_malformed_line_fails_the_import_naming_its_line_and_nothing_is_imported() {
    let (t, _b) = setup();
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (a, b)"]), 0);
    // The first record's quoted field spans lines 2 and 3, so the record with
    // three fields is on line 5.
    let file = write(&t, "bad.csv", "a,b\n1,\"x\ny\"\n2,z\n3,w,extra\n4,v\n");
    let o = cli(&db, &["import", &file, "--table", "t"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("line 5") && err.contains("3 fields"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM t"), 0);

    let jsonl = write(&t, "bad.jsonl", "{\"a\": 1}\n{\"a\": \n");
    let o = cli(&db, &["--json", "import", &jsonl, "--table", "t"]);
    let msg = assert_json_error(&o, 1, "malformed");
    assert!(msg.contains("line 2: not valid JSON"), "{msg}");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM t"), 0);
}

#[test]
fn a_refused_row_fails_the_import_naming_its_line_and_nothing_is_imported() {
    let (t, _b) = setup();
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (a UNIQUE, b)"]), 0);
    // The duplicate is the fourth record, on line 6 (the header is line 1, and
    // the second record's quoted field spans lines 3 and 4).
    let file = write(&t, "dup.csv", "a,b\n1,x\n2,\"multi\nline\"\n3,y\n1,again\n");
    let o = cli(&db, &["import", &file, "--table", "t"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("line 6") && err.contains("UNIQUE constraint failed: t.a"), "{err}");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM t"), 0);
    // With --create, the table made for a failed import is gone again.
    let o = cli(&db, &["import", &file, "--table", "made", "--create"]);
    assert_exit(&o, 0);
    let o = cli(&db, &["import", &write(&t, "x.csv", "k\n1\n2,3\n"), "--table", "other", "--create"]);
    assert_exit(&o, 1);
    assert!(!tables(&db).contains(&"other".to_owned()), "{:?}", tables(&db));
}

#[test]
fn a_missing_table_without_create_fails_and_nothing_is_created() {
    let (t, _b) = setup();
    let db = t.db();
    let file = write(&t, "skus.csv", CSV);
    let o = cli(&db, &["import", &file, "--table", "skus"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("no table skus"), "{}", stderr(&o));
    assert!(tables(&db).is_empty(), "{:?}", tables(&db));
    // A format that cannot be told from the name is a usage error.
    let o = cli(&db, &["import", &write(&t, "skus.txt", CSV), "--table", "skus", "--create"]);
    assert_exit(&o, 2);
    assert!(tables(&db).is_empty(), "{:?}", tables(&db));
}
