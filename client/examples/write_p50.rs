//! One-row write latency through `Db::execute` (the Rust side of
//! scripts/bench-python.sh): `write_p50 <db> <writes>` writes one row at a time
//! into table `bench` and prints `{"p50_us":…,"p90_us":…,"n":…}`.

use std::time::Instant;

use litebroker_client::Db;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: write_p50 <db> <writes>")?;
    let n: usize = args.next().unwrap_or_else(|| "2000".into()).parse()?;
    let db = Db::builder(&db).client_name("bench-rust").open()?;
    for i in 0..100 {
        db.execute("INSERT INTO bench (v) VALUES (?1)", [i])?;
    }
    let mut us: Vec<f64> = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        db.execute("INSERT INTO bench (v) VALUES (?1)", [i as i64])?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    println!(r#"{{"p50_us":{:.1},"p90_us":{:.1},"n":{n}}}"#, us[n / 2], us[n * 9 / 10]);
    Ok(())
}
