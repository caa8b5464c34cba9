//! Pipelined writes: an event log written without waiting for each answer.
//! `pipeline <db> <events>` creates table `events` if needed, sends the events
//! through `Client::pipeline` (up to 64 unanswered), waits for every answer and
//! prints `{"written":…,"failed":…,"writes_per_s":…}`. One failing write (here:
//! a duplicate id, every 1000th event) fails alone; the others commit.

use std::time::Instant;

use litebroker_client::{Client, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: pipeline <db> <events>")?;
    let n: i64 = args.next().unwrap_or_else(|| "10000".into()).parse()?;
    let mut client = Client::connect(&db)?;
    client.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, what TEXT NOT NULL)", &[])?;
    let base: i64 = client.execute("INSERT INTO events (what) VALUES ('start')", &[])?.last_insert_rowid;
    let t = Instant::now();
    let mut p = client.pipeline();
    for i in 1..=n {
        // Every 1000th event reuses the id before it: a constraint failure of its own.
        let id = if i % 1000 == 0 { base + i - 1 } else { base + i };
        let _pending = p.submit(
            "INSERT INTO events (id, what) VALUES (?1, ?2)",
            &[Value::Integer(id), Value::Text(format!("event {i}"))],
        )?;
    }
    let answers = p.wait_all();
    let failed = answers.iter().filter(|r| r.is_err()).count();
    let secs = t.elapsed().as_secs_f64();
    println!(
        r#"{{"written":{},"failed":{failed},"writes_per_s":{:.0}}}"#,
        answers.len() - failed,
        answers.len() as f64 / secs
    );
    Ok(())
}
