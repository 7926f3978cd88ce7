//! Writes a synthetic replay corpus (REPLAY.md formats) of any size, for load and timing
//! runs of `stockgrid replay` until the simulator lands: a realistic event mix over many
//! pairs, with duplicates, out-of-order arrivals and a few events later than the bound.
//!
//! Run: `cargo run --release -p stockgrid-actors --example make_replay_files -- EVENTS DIR`
//! (e.g. `1000000 /tmp/replay-1m`); writes DIR/events.jsonl and DIR/queries.jsonl.

use std::io::{BufWriter, Write};

use stockgrid_actors::time::{SECOND_MS, Timestamp};

const T0: Timestamp = Timestamp(1_772_352_000_000); // 2026-03-01T08:00:00Z

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(count), Some(dir)) = (args.next().and_then(|c| c.parse::<u64>().ok()), args.next())
    else {
        eprintln!("usage: make_replay_files EVENTS DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir)?;
    let mut events = BufWriter::new(std::fs::File::create(format!("{dir}/events.jsonl"))?);
    let mut queries = BufWriter::new(std::fs::File::create(format!("{dir}/queries.jsonl"))?);
    let pairs = (count / 20).max(10);
    // One simulated day, whatever the count.
    let spacing_ms = (24 * 3_600 * SECOND_MS / count as i64).max(1);
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut previous: Option<String> = None;
    let mut query_count = 0u64;
    for i in 0..count {
        let arrival = T0.plus_ms(i as i64 * spacing_ms);
        let roll = next() % 1000;
        if let Some(line) = previous.as_ref().filter(|_| roll < 20) {
            // A duplicate: the same event again, arriving now.
            let ingest = format!("\"ingest_time\":\"{}\"", arrival.to_rfc3339());
            let cut = line.rfind("\"ingest_time\"").unwrap_or(line.len());
            writeln!(events, "{}{ingest}}}", &line[..cut])?;
            continue;
        }
        let delay_ms = if roll < 25 {
            30 * 3_600 * SECOND_MS
        } else {
            (next() % 600) as i64 * SECOND_MS
        };
        let event_time = Timestamp(arrival.0 - delay_ms);
        let pair = next() % pairs;
        let (kind, source, qty) = match next() % 100 {
            0..=64 => ("sale", "pos", 1 + (next() % 3) as i64),
            65..=76 => ("receipt", "receiving", 12),
            77..=79 => ("return", "pos", 1),
            80..=82 => ("adjustment", "store_inventory", (next() % 5) as i64 - 2),
            83..=89 => ("count", "store_inventory", (next() % 40) as i64),
            90..=94 => ("rfid_read", "rfid", (next() % 40) as i64),
            _ => ("snapshot", "wms", (next() % 40) as i64),
        };
        let line = format!(
            "{{\"event_id\":\"g{i}\",\"source\":\"{source}\",\"kind\":\"{kind}\",\"sku\":{},\"location\":{},\"qty\":{qty},\"event_time\":\"{}\",\"ingest_time\":\"{}\"}}",
            100_000 + pair / 8,
            1 + pair % 8,
            event_time.to_rfc3339(),
            arrival.to_rfc3339()
        );
        writeln!(events, "{line}")?;
        previous = Some(line);
        if i % 20 == 0 {
            query_count += 1;
            let pair = next() % pairs;
            let surface = ["item_page", "pickup", "delivery"][(next() % 3) as usize];
            writeln!(
                queries,
                "{{\"query_id\":\"q{i}\",\"time\":\"{}\",\"sku\":{},\"location\":{},\"qty\":{},\"surface\":\"{surface}\"}}",
                arrival.to_rfc3339(),
                100_000 + pair / 8,
                1 + pair % 8,
                1 + next() % 2
            )?;
        }
    }
    events.flush()?;
    queries.flush()?;
    eprintln!("wrote {count} events over {pairs} pairs and {query_count} queries to {dir}");
    Ok(())
}
